"""The BLT entropy model on the development corpus (../shared/data/gutenberg,
eight public-domain books, ~3.7 MB, CRLF line ends, some UTF-8). Run from the
repository root:

  python -m bltdiff.main --config=configs/entropy_gutenberg.py --workdir=runs/entropy_gutenberg

1500 steps of 32x256 bytes: on a 2-core CPU shared with other jobs a step ran
at about 0.3 steps/s (well over an hour in all), so on a laptop lower
--config.train.num_steps or use an accelerator. Then:

  python -m bltdiff.calibrate --entropy_model=runs/entropy_gutenberg \
      --data='../shared/data/gutenberg/*.txt' --target_mean=4.5 --mode=entropy
  python -m data_prep.prepare ... --entropy_model=runs/entropy_gutenberg
  python -m bltdiff.show_patches --entropy_model=runs/entropy_gutenberg \
      --text="It is a truth universally acknowledged" --threshold=THETA --out=patches.png

Like BLT's entropy model, it is small and sees a bounded context (seq_len
bytes; bltdiff.entropy scores long documents in overlapping chunks of that
length).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      kind='byte_ar', dim=128, num_layers=3, num_heads=4, mlp_dim=512,
      attention_window=0, dropout=0.0, dtype='float32'))

  c.data = ml_collections.ConfigDict(dict(
      source='text', paths='../shared/data/gutenberg', prepared_dir='', seq_len=256,
      num_workers=0, builtin_max_bytes=0, validation_fraction=0.02, use_entropies=False))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=1500, learning_rate=3e-3, warmup_steps=100, weight_decay=0.01,
      grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1,
      log_every=50, eval_every=250, eval_batches=8, eval_t_samples=1,
      sample_every=500, checkpoint_every=250, keep_checkpoints=2,
      peak_flops_per_device=0.0))

  c.sample = ml_collections.ConfigDict(dict(
      sampler='ancestral', steps=128, num_samples=2, cached=True, top_p=1.0, block_length=0))

  # Patching of models trained on entropies from this model; the threshold
  # comes from `python -m bltdiff.calibrate` (target 4.5 bytes per patch).
  c.patching = ml_collections.ConfigDict(dict(
      mode='entropy', threshold=1.5, monotonic_threshold=0.0, reset_on_newline=False,
      static_size=4, max_patch_len=8, num_slots=64))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c

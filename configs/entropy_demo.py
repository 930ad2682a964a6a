"""The BLT entropy model, demo size: a small causal byte transformer (byte_ar)
on the built-in corpus (the Python installation's standard library and docs),
trained on a CPU in a few minutes with nothing to download.

  python -m bltdiff.main --config=configs/entropy_demo.py --workdir=runs/entropy_demo

Then calibrate a threshold and look at the patches:

  python -m bltdiff.calibrate --entropy_model=runs/entropy_demo \
      --data=runs/entropy_demo/data --target_mean=4.5 --mode=entropy
  python -m bltdiff.show_patches --entropy_model=runs/entropy_demo \
      --text="def main(argv):" --threshold=THETA --out=patches.png
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Entropy only needs a rough next-byte distribution: a tiny model is enough,
  # and the context is bounded (seq_len; attention_window > 0 bounds it further).
  c.model = ml_collections.ConfigDict(dict(
      kind='byte_ar', dim=128, num_layers=2, num_heads=4, mlp_dim=384,
      attention_window=0, dropout=0.0, dtype='float32'))

  c.data = ml_collections.ConfigDict(dict(
      source='builtin', paths='', prepared_dir='', seq_len=256, num_workers=0,
      builtin_max_bytes=4_000_000, validation_fraction=0.02, use_entropies=False))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=600, learning_rate=3e-3, warmup_steps=50, weight_decay=0.01,
      grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1,
      log_every=50, eval_every=200, eval_batches=8, eval_t_samples=1,
      sample_every=300, checkpoint_every=200, keep_checkpoints=2,
      peak_flops_per_device=0.0))

  c.sample = ml_collections.ConfigDict(dict(
      sampler='ancestral', steps=128, num_samples=2, cached=True, top_p=1.0, block_length=0))

  # How models trained on this run's data will be patched (bltdiff.patching);
  # set threshold from `python -m bltdiff.calibrate` on this model.
  c.patching = ml_collections.ConfigDict(dict(
      mode='entropy', threshold=1.5, monotonic_threshold=0.0, reset_on_newline=False,
      static_size=4, max_patch_len=8, num_slots=64))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c

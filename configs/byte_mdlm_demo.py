"""The byte-level MDLM baseline at demo scale: a small byte MDLM on the
built-in corpus (the Python installation's own standard library and docs),
trained and sampled on a CPU in minutes with nothing to download.

  python -m bltdiff.main --config=configs/byte_mdlm_demo.py --workdir=runs/byte_mdlm_demo
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      kind='byte_mdlm', dim=128, num_layers=4, num_heads=4, mlp_dim=384, dropout=0.0,
      schedule='loglinear', dtype='float32'))

  c.data = ml_collections.ConfigDict(dict(
      source='builtin', paths='', prepared_dir='', seq_len=128, num_workers=0,
      builtin_max_bytes=4_000_000, validation_fraction=0.02, use_entropies=False))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=600, learning_rate=2e-3, warmup_steps=50, weight_decay=0.01,
      grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1,
      log_every=50, eval_every=200, eval_batches=8, eval_t_samples=4,
      sample_every=300, checkpoint_every=200, keep_checkpoints=2,
      peak_flops_per_device=0.0))

  c.sample = ml_collections.ConfigDict(dict(
      sampler='cached', steps=128, num_samples=4, top_p=1.0, block_length=0))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c

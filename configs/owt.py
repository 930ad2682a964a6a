"""Latent MDLM on OpenWebText, TPU scale: 4096-byte sequences, a ~110M-parameter
latent transformer over 1024 patch slots, BLT-like entropy patching.

  python -m bltdiff.main --config=configs/owt.py --workdir=gs://BUCKET/runs/owt \
      [--config.data.data_files=/path/to/openwebtext/*.parquet]

The chain (LatentMDLM.prepare_data) trains the entropy model into
WORKDIR/entropy_model unless --config.patching.entropy_model=DIR names a
trained one, prepares shards with entropies into WORKDIR/data, calibrates the
global threshold to 4.5 bytes per patch (BLT's average on English text) and
trains. For multi-host runs, prepare once beforehand (see launch/) and pass
--config.data.prepared_dir. Parameter counts and FLOPs per byte:
`python bench/model_costs.py configs/owt.py`.
"""

import ml_collections


def entropy_model_config(data):
  """BLT's entropy model is a ~100M byte LM with a 512-byte window; this one is
  smaller (~25M): patch boundaries only need rough entropies."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      kind='byte_ar', dim=512, num_layers=8, num_heads=8, mlp_dim=1536,
      attention_window=512, dropout=0.0, dtype='bfloat16'))
  c.data = ml_collections.ConfigDict(dict(data, seq_len=1024, use_entropies=False))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=256, num_steps=20_000, learning_rate=1e-3, warmup_steps=1000,
      weight_decay=0.1, grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1,
      log_every=100, eval_every=5000, eval_batches=32, eval_t_samples=1,
      sample_every=20_000, checkpoint_every=5000, keep_checkpoints=2,
      peak_flops_per_device=0.0))
  c.sample = ml_collections.ConfigDict(dict(
      sampler='cached', steps=1, num_samples=4, top_p=1.0, block_length=0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  data = dict(source='openwebtext', paths='', data_files='', prepared_dir='', seq_len=4096,
              num_workers=4, validation_fraction=0.005, use_entropies=True)

  # Latent transformer: 12 x 768 with SwiGLU 2816 ≈ 106M parameters.
  c.model = ml_collections.ConfigDict(dict(
      kind='latent_mdlm', dim=768, num_layers=12, num_heads=12, mlp_dim=2816, dropout=0.0,
      enc_dim=384, enc_layers=1, enc_heads=6, enc_mlp_dim=1152, pool_queries=2,
      ngram_sizes=(3, 4, 5, 6, 7, 8), hash_buckets=50_000,
      dec_dim=384, dec_layers=2, dec_heads=6, dec_mlp_dim=1152, decoder_mode='ar',
      schedule='loglinear', dtype='bfloat16'))
  c.data = ml_collections.ConfigDict(data)

  # 4096 / 4.5 ≈ 910 patches on average; 1024 slots leave room for harder text.
  c.patching = ml_collections.ConfigDict(dict(
      mode='entropy', threshold=1.5, monotonic_threshold=0.0, reset_on_newline=False,
      static_size=4, max_patch_len=8, num_slots=1024,
      entropy_model='', calibrate_target_mean=4.5, calibrate_bytes=1 << 24))
  c.entropy_model = entropy_model_config(data)

  c.train = ml_collections.ConfigDict(dict(
      batch_size=256, num_steps=100_000, learning_rate=3e-4, warmup_steps=2500,
      weight_decay=0.1, grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1,
      b2=0.95, log_every=100, eval_every=5000, eval_batches=64, eval_t_samples=4,
      sample_every=10_000, checkpoint_every=2500, keep_checkpoints=3,
      peak_flops_per_device=0.0))
  c.sample = ml_collections.ConfigDict(dict(
      sampler='cached', steps=1024, num_samples=8, top_p=1.0, block_length=0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c

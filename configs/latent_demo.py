"""The whole bltdiff chain at demo scale, on a CPU, with nothing to download:

  python -m bltdiff.main --config=configs/latent_demo.py --workdir=runs/latent_demo

One command runs, skipping any step already done in the workdir:
  1. trains the BLT entropy model (a tiny byte AR) into WORKDIR/entropy_model;
  2. prepares shards of the built-in corpus (the Python installation's own
     standard library and docs) with per-byte entropies into WORKDIR/data;
  3. calibrates the entropy threshold to patching.calibrate_target_mean bytes
     per patch (WORKDIR/calibration.json; the resolved threshold is in
     WORKDIR/config.json);
  4. trains the latent MDLM, evaluates bits per byte, writes samples.
Then `--mode=eval` gives the bound on the validation split. About 10 minutes
on 2 CPU cores. An already trained entropy model can be reused with
--config.patching.entropy_model=DIR.
"""

import ml_collections


def entropy_model_config(data):
  """A small causal byte transformer: entropies only need a rough next-byte
  distribution, so it trains in a minute or two."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      kind='byte_ar', dim=64, num_layers=2, num_heads=4, mlp_dim=192,
      attention_window=0, dropout=0.0, dtype='float32'))
  c.data = ml_collections.ConfigDict(dict(data, seq_len=128, use_entropies=False))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=200, learning_rate=3e-3, warmup_steps=20, weight_decay=0.01,
      grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1,
      log_every=50, eval_every=200, eval_batches=4, eval_t_samples=1,
      sample_every=10_000, checkpoint_every=200, keep_checkpoints=1,
      peak_flops_per_device=0.0))
  c.sample = ml_collections.ConfigDict(dict(
      sampler='cached', steps=1, num_samples=1, top_p=1.0, block_length=0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  data = dict(source='builtin', paths='', prepared_dir='', seq_len=256, num_workers=0,
              builtin_max_bytes=1_200_000, validation_fraction=0.05, use_entropies=True)

  # Latent transformer (dim/num_layers/num_heads/mlp_dim) over patch slots;
  # enc_* the local encoder, dec_* the local decoder (decoder_mode 'ar' or 'parallel').
  c.model = ml_collections.ConfigDict(dict(
      kind='latent_mdlm', dim=128, num_layers=4, num_heads=4, mlp_dim=384, dropout=0.0,
      enc_dim=64, enc_layers=1, enc_heads=2, enc_mlp_dim=192, pool_queries=2,
      ngram_sizes=(3, 4, 5, 6, 7, 8), hash_buckets=4096,
      dec_dim=64, dec_layers=1, dec_heads=2, dec_mlp_dim=192, decoder_mode='ar',
      schedule='loglinear', dtype='float32'))

  c.data = ml_collections.ConfigDict(data)

  # BLT-style entropy patching; the threshold is calibrated on the train split.
  # num_slots = P_max: 256 bytes / 4.5 ≈ 57 patches, with room for hard text
  # (patches that do not fit are paid for as overflow bytes, log 257 nats each).
  c.patching = ml_collections.ConfigDict(dict(
      mode='entropy', threshold=1.5, monotonic_threshold=0.0, reset_on_newline=False,
      static_size=4, max_patch_len=8, num_slots=80,
      entropy_model='', calibrate_target_mean=4.5, calibrate_bytes=1 << 19))
  c.entropy_model = entropy_model_config(data)

  c.train = ml_collections.ConfigDict(dict(
      batch_size=16, num_steps=400, learning_rate=2e-3, warmup_steps=40, weight_decay=0.01,
      grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1,
      log_every=50, eval_every=200, eval_batches=8, eval_t_samples=4,
      sample_every=200, checkpoint_every=200, keep_checkpoints=2,
      peak_flops_per_device=0.0))

  # steps: ~ patches per sample is enough (one slot per step on average).
  c.sample = ml_collections.ConfigDict(dict(
      sampler='cached', steps=64, num_samples=4, top_p=1.0, block_length=0))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c

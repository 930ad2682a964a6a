"""Latent MDLM on OpenWebText, TPU scale: 4096-byte sequences, a ~110M-parameter
latent transformer over 1024 patch slots, BLT-like entropy patching.

  python -m bltdiff.main --config=configs/owt.py --workdir=gs://BUCKET/runs/owt \
      [--config.data.data_files=/path/to/openwebtext/*.parquet]

The chain (bltdiff.data_chain) trains the entropy model into
WORKDIR/entropy_model unless --config.patching.entropy_model=DIR names a
trained one, prepares shards with entropies into WORKDIR/data, calibrates the
global threshold to 4.5 bytes per patch (BLT's average on English text) and
trains. In a multi-host run every process takes part: the entropy model
trains on all chips, each host scores its share of the shards on its own
chips. Parameter counts and FLOPs per byte:
`python bench/model_costs.py --configs=configs/owt.py`.
"""

from configs import common


def get_config():
  data = common.data_config(source='openwebtext', seq_len=4096, num_workers=4,
                            validation_fraction=0.005, use_entropies=True)
  # BLT's entropy model is a ~100M byte LM with a 512-byte window; this one is
  # smaller (~25M): patch boundaries only need rough entropies.
  entropy_model = common.entropy_model_run(
      data, seq_len=1024, dim=512, num_layers=8, num_heads=8, mlp_dim=1536,
      attention_window=512, dtype='bfloat16')
  entropy_model.train.update(batch_size=256, num_steps=20_000, learning_rate=1e-3,
                             warmup_steps=1000, weight_decay=0.1, log_every=100,
                             eval_every=5000, eval_batches=32, sample_every=20_000,
                             checkpoint_every=5000, keep_checkpoints=2)
  return common.run(
      # Latent transformer: 12 x 768 with SwiGLU 2816 ≈ 106M parameters. The
      # local decoder is half its width and 2 layers deep: bench/scaling.py
      # (variant decoder_x2) finds p(patch | h_i) sets bltdiff's floor when
      # the decoder is small, as the development corpus recipe does too.
      # visible_weight=1: the autoencoding term that makes the latent model use
      # context (configs/latent_gutenberg.py says why, with the rows).
      model=common.latent_model(
          dim=768, num_layers=12, num_heads=12, mlp_dim=2816,
          enc_dim=384, enc_layers=1, enc_heads=6, enc_mlp_dim=1152, hash_buckets=50_000,
          dec_dim=384, dec_layers=2, dec_heads=6, dec_mlp_dim=1152, visible_weight=1.0,
          dtype='bfloat16'),
      data=data,
      train=common.train_config(
          batch_size=256, num_steps=100_000, learning_rate=3e-4, warmup_steps=2500,
          weight_decay=0.1, b2=0.95, log_every=100, eval_every=5000, eval_batches=64,
          sample_every=10_000, checkpoint_every=2500, keep_checkpoints=3,
          ema_rate=0.9999),  # MD4's EMA: a ~10k-step horizon, a tenth of the run
      sample=common.sample_config(steps=1024, num_samples=8),
      # 4096 / 4.5 ≈ 910 patches on average; 1024 slots leave room for harder text.
      patching=common.patching_config(num_slots=1024, calibrate_bytes=1 << 24),
      entropy_model=entropy_model)

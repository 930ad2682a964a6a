"""The BLT entropy model at demo scale: a tiny causal byte transformer on the
built-in corpus, trained on a CPU in minutes.

  python -m bltdiff.main --config=configs/entropy_demo.py --workdir=runs/entropy

Then calibrate a threshold with `python -m bltdiff.calibrate --entropy_model=runs/entropy ...`
(README, "The bltdiff chain, step by step").
"""

from configs import common


def get_config():
  # Entropy only needs a rough next-byte distribution: a tiny model is enough,
  # and the context is bounded (seq_len; attention_window > 0 bounds it further).
  return common.run(
      model=common.byte_model('byte_ar', dim=128, num_layers=2, num_heads=4, mlp_dim=384),
      data=common.data_config(source='builtin', seq_len=256, builtin_max_bytes=4_000_000,
                              validation_fraction=0.02),
      train=common.train_config(batch_size=32, num_steps=600, learning_rate=3e-3,
                                warmup_steps=50, eval_t_samples=1, sample_every=300),
      sample=common.sample_config(num_samples=2))

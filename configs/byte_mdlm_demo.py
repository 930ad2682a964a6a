"""The byte-level MDLM baseline at demo scale: a small byte MDLM on the
built-in corpus (the Python installation's own standard library and docs),
trained and sampled on a CPU in minutes with nothing to download.

  python -m bltdiff.main --config=configs/byte_mdlm_demo.py --workdir=runs/byte_mdlm_demo
"""

from configs import common


def get_config():
  return common.run(
      model=common.byte_model('byte_mdlm'),
      data=common.data_config(source='builtin', seq_len=128, builtin_max_bytes=4_000_000,
                              validation_fraction=0.02),
      train=common.train_config(batch_size=32, num_steps=600, warmup_steps=50,
                                sample_every=300),
      sample=common.sample_config(steps=128))

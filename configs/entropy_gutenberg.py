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

from configs import common


def get_config():
  return common.run(
      model=common.byte_model('byte_ar', dim=128, num_layers=3, num_heads=4, mlp_dim=512),
      data=common.data_config(source='text', paths='../shared/data/gutenberg',
                              builtin_max_bytes=0, validation_fraction=0.02),
      train=common.train_config(batch_size=32, num_steps=1500, learning_rate=3e-3,
                                warmup_steps=100, eval_every=250, eval_t_samples=1,
                                sample_every=500, checkpoint_every=250),
      sample=common.sample_config(num_samples=2))

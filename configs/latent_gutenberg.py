"""Latent MDLM on the development corpus (public-domain books). The data path
is yours to give; from the repository root, with the corpus beside it:

  python -m bltdiff.main --config=configs/latent_gutenberg.py \
      --config.data.paths='../shared/data/gutenberg/*.txt' --workdir=runs/latent_gutenberg

The chain trains its own entropy model (WORKDIR/entropy_model), prepares shards
with entropies, calibrates the threshold to 4.5 bytes per patch and trains the
latent MDLM. Reuse a trained entropy model (e.g. configs/entropy_gutenberg.py's
run) with --config.patching.entropy_model=runs/entropy_gutenberg. About an
hour on 2 CPU cores at this size; bench/likelihood.py runs shorter versions.

The local decoder is twice the common default (128 wide, 2 layers) and the run
correspondingly shorter (1700 steps at 1.24e11 FLOPs each against 3000 at
6.9e10: the same training FLOPs). The scaling benchmark (bench/scaling.py,
variant decoder_x2) found the local decoder, p(patch | h_i), to be what holds
bltdiff back at this size: at equal FLOPs the wider decoder lowers the bound by
2.6-4.5% at each budget it ran (0.5x-4x), while moving FLOPs the other way
(latent_heavy) costs 8%. It shifts the curve down; it does not make it
steeper. BENCHMARKS.md has the rows.
"""

from configs import common


def get_config():
  data = common.data_config(source='text', paths='',  # --config.data.paths=GLOB (required)
                            builtin_max_bytes=0, seq_len=512, use_entropies=True)
  return common.run(
      model=common.latent_model(dim=192, num_layers=6, num_heads=6, mlp_dim=576,
                                dec_dim=128, dec_heads=4, dec_layers=2, dec_mlp_dim=384),
      data=data,
      train=common.train_config(num_steps=1700, learning_rate=1.5e-3, warmup_steps=85,
                                eval_every=500, eval_batches=16, sample_every=1000,
                                checkpoint_every=500),
      sample=common.sample_config(steps=128),
      patching=common.patching_config(num_slots=160),  # 512 / 4.5 ≈ 114 patches, with room
      entropy_model=common.entropy_model_run(data, seq_len=256, dim=128, num_layers=3,
                                             mlp_dim=512))

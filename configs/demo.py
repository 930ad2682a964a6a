"""The default, README's first command: the whole bltdiff chain at demo scale on
a CPU with nothing to download.

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo

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
--config.patching.entropy_model=DIR. The byte-level MDLM baseline at the same
scale: configs/byte_mdlm_demo.py.
"""

from configs import common


def get_config():
  # ~1.2 MB keeps the chain within minutes; a 5% validation split still holds
  # enough full rows for evaluation.
  data = common.data_config(source='builtin', seq_len=256, builtin_max_bytes=1_200_000,
                            use_entropies=True)
  return common.run(
      # The local decoder stays at the common default (64 wide, 1 layer), though
      # bench/scaling.py (variant decoder_x2) finds one twice that lowers the
      # bound by 2.6-4.5% at equal training FLOPs (configs/latent_gutenberg.py
      # and configs/owt.py take it). This demo is the size bench/sampling.py's
      # runs share, and there the wider decoder costs more than it gives: a
      # sample with 8 latent calls takes 1.42x the FLOPs (5.6 -> 7.9 MFLOPs per
      # byte, the decoder's share 8% -> 35%), for a few per cent of bound; and a
      # training step 2.7x (4.0 -> 10.8 MFLOPs per byte: 2.7x fewer steps in the
      # same time). Both from: python bench/model_costs.py --configs=configs/demo.py
      #   [--set=model.dec_dim=128,model.dec_heads=4,model.dec_layers=2,model.dec_mlp_dim=384]
      # model.visible_weight stays 0 (the other two configs set 1): in
      # bench/scaling.py the term (variant visible_recon) costs 1.2% of bound at
      # the 1x budget, 400 steps as here (1.4% with seed 1), and pays only with
      # more compute (-3.7% at 4x; configs/latent_gutenberg.py has the rows).
      model=common.latent_model(),
      data=data,
      train=common.train_config(),
      # steps: ~ patches per sample is enough (one slot per step on average).
      sample=common.sample_config(steps=64),
      # num_slots = P_max: 256 bytes / 4.5 ≈ 57 patches, with room for hard text.
      patching=common.patching_config(num_slots=80),
      entropy_model=common.entropy_model_run(data))

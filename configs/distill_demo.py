"""Few-step sampling by distillation, on top of the demo:

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo
  python -m bltdiff.main --config=configs/distill_demo.py --workdir=runs/distill \\
      --config.distill.teacher=runs/demo

Four rounds of SDTT (bltdiff/latent/distillation.py): the demo model sampling
with 32 steps teaches a student sampling with 16, that one a student with 8,
then 4, then 2 (runs/distill/round_1 .. round_4, each an ordinary latent MDLM
run: sample it with --mode=sample --workdir=runs/distill/round_4 --steps=2).
"""

from configs import common


def get_config():
  return common.distill_run(
      # Each round starts from a trained model, so it needs far fewer steps
      # than training did, at a lower learning rate.
      train=common.train_config(batch_size=16, num_steps=60, learning_rate=3e-4,
                                warmup_steps=10, final_lr_fraction=0.1, log_every=20,
                                eval_every=60, eval_batches=4, eval_t_samples=1,
                                sample_every=60, checkpoint_every=60, keep_checkpoints=1),
      distill=common.distill_config(teacher='runs/demo', teacher_steps=32, rounds=4,
                                    step_ratio=2))

"""Few-step sampling by distillation, on top of the demo:

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo
  python -m bltdiff.main --config=configs/distill_demo.py --workdir=runs/distill \\
      --config.distill.teacher=runs/demo

Four rounds of SDTT (bltdiff/latent/distillation.py): the demo model sampling
with 32 steps teaches a student sampling with 16, that one a student with 8,
then 4, then 2 (runs/distill/round_1 .. round_4, each an ordinary latent MDLM
run: sample it with --mode=sample --workdir=runs/distill/round_4). About 10
minutes on 2 CPU cores after the demo (100 steps per round).
"""

from configs import common


def get_config():
  return common.distill_run(
      # Each round starts from a trained model: far fewer steps than training,
      # at a low learning rate (from the teacher's weights, Adam's per-step
      # noise at the demo's 2e-3 would undo more than the few steps teach).
      train=common.train_config(batch_size=16, num_steps=100, learning_rate=1e-4,
                                warmup_steps=10, final_lr_fraction=0.1, log_every=20,
                                eval_every=100, eval_batches=4, eval_t_samples=1,
                                sample_every=100, checkpoint_every=100, keep_checkpoints=1),
      distill=common.distill_config(teacher='runs/demo', teacher_steps=32, rounds=4,
                                    step_ratio=2))

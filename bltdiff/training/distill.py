"""Distillation rounds: a few-step latent MDLM from a trained one, by SDTT
(the objective and its maths: bltdiff/latent/distillation.py).

  python -m bltdiff.main --config=configs/distill_demo.py --workdir=DIR \\
      --config.distill.teacher=<workdir of a trained latent MDLM>

Round r = 1 .. distill.rounds, with k = distill.step_ratio:
  teacher   distill.teacher for r = 1, else DIR/round_{r-1}; it samples with
            T_r = distill.teacher_steps / k^(r-1) steps
  student   starts from the teacher's parameters (their EMA when the teacher
            keeps one) with a fresh optimizer, and learns one step for k of
            the teacher's: it samples with T_r / k steps
  DIR/round_r   an ordinary latent MDLM run directory (config.json,
            checkpoints/, metrics, samples): every sampler, --mode=sample,
            eval and export work on it as on any run

A round trains with the project's trainer (`loop.train_and_evaluate`, the
distillation loss as its `steps.Objective`, the teacher's parameters its
frozen tree), on the teacher's prepared data with the teacher's patcher;
config.train is each round's optimizer and cadence, config.seed + r − 1 its
seed. Its config.json is the teacher's config with these, sample.steps =
T_r / k (the cached sampler), and a `distill` section saying what it was
distilled from. Rerunning the command resumes: finished rounds are skipped,
an interrupted one resumes bit-exactly from its latest checkpoint.
"""

import functools
import os

from absl import logging

from bltdiff.errors import BltdiffError, ConfigError
from bltdiff.latent import distillation
from bltdiff.models import registry
from bltdiff.training import checkpointing, loop, restore, steps


def round_dir(workdir: str, r: int) -> str:
  return os.path.join(workdir, f'round_{r}')


def round_plan(distill_config, r: int) -> distillation.StepPlan:
  """Round r's teacher step count T_r and the ratio k."""
  k = distill_config.step_ratio
  return distillation.StepPlan(distill_config.teacher_steps // k ** (r - 1), k)


def teacher_of(config, workdir: str, r: int) -> str:
  if r == 1:
    return os.path.abspath(config.distill.teacher)
  return os.path.abspath(round_dir(workdir, r - 1))


def load_teacher_config(teacher_dir: str):
  """The teacher run's saved config, or a one-line error naming distill.teacher."""
  try:
    saved = checkpointing.load_config(teacher_dir)
  except BltdiffError as e:
    raise ConfigError(f'distill.teacher: {e}')
  if saved.model.kind != 'latent_mdlm' or saved.get('patching') is None:
    raise ConfigError(f'distill.teacher: {teacher_dir} holds a {saved.model.kind!r} run; '
                      f'distillation needs a latent_mdlm run')
  if saved.model.decoder_mode == 'diffusion':
    raise ConfigError(f'distill.teacher: {teacher_dir} has the diffusion local decoder, whose '
                      f'patch probabilities are only bounded; distil an ar or parallel run')
  if saved.data.get('format', 'text') != 'text':
    raise ConfigError(f'distill.teacher: {teacher_dir} was trained on '
                      f'data.format={saved.data.format!r}; distillation takes text runs')
  return saved


def round_config(config, teacher_dir: str, r: int):
  """Round r's run config: the teacher's, with config.train, config.mesh, the
  round's seed and sampler steps, the teacher's patcher kept as calibrated,
  and the `distill` section of the round."""
  c = load_teacher_config(teacher_dir)
  plan = round_plan(config.distill, r)
  c.seed = config.seed + r - 1
  c.train = config.train.copy_and_resolve_references()
  c.mesh = config.mesh.copy_and_resolve_references()
  c.sample.update(sampler='cached', steps=plan.student_steps)
  c.patching.calibrate_target_mean = 0.0  # the threshold in the teacher's config stands
  c.distill = dict(teacher=teacher_dir, source_teacher=os.path.abspath(config.distill.teacher),
                   round=r, rounds=config.distill.rounds, teacher_steps=plan.teacher_steps,
                   step_ratio=plan.step_ratio, student_steps=plan.student_steps)
  return c


def check_same_round(config, directory: str):
  """A round directory resumes only with the same teacher and steps."""
  if not os.path.exists(os.path.join(directory, 'config.json')):
    return
  saved = checkpointing.load_config(directory).get('distill') or {}
  for field in ('teacher', 'teacher_steps', 'step_ratio'):
    if saved.get(field) != config.distill[field]:
      raise ConfigError(f'distill.{field}: {directory} was distilled with '
                        f'{saved.get(field)!r}, now {config.distill[field]!r}; distill into '
                        f'another --workdir')


def finished(directory: str, num_steps: int) -> bool:
  if not os.path.isdir(checkpointing.checkpoint_dir(directory)):
    return False
  latest = checkpointing.make_manager(directory).latest_step()
  return latest is not None and latest >= num_steps


def objective_of(model, plan: distillation.StepPlan, teacher_params) -> steps.Objective:
  loss = functools.partial(_round_loss, model, plan)
  return steps.Objective(loss=loss, frozen=teacher_params)


def _round_loss(model, plan, params, teacher_params, batch, key, train):
  return distillation.distillation_loss(model, params, teacher_params, batch, key, plan, train)


def distill(config, workdir: str, stop_at_step: int | None = None) -> list[str]:
  """Runs (or resumes) every round; returns the round directories done.
  stop_at_step: stop the round in progress after that step (with a
  checkpoint), as a preempted job would; a rerun resumes it."""
  load_teacher_config(os.path.abspath(config.distill.teacher))  # fail before any work
  done = []
  for r in range(1, config.distill.rounds + 1):
    directory = round_dir(workdir, r)
    teacher_dir = teacher_of(config, workdir, r)
    if not finished(teacher_dir, 0 if r == 1 else config.train.num_steps):
      raise BltdiffError(f'round {r}: its teacher {teacher_dir} has no finished checkpoint')
    rc = round_config(config, teacher_dir, r)
    check_same_round(rc, directory)
    if not finished(directory, config.train.num_steps):
      checkpointing.check_resumable(rc, directory)
      teacher = restore.load_for_inference(teacher_dir)
      plan = round_plan(config.distill, r)
      logging.info('distillation round %d of %d: %s (%d steps) -> %s (%d steps)', r,
                   config.distill.rounds, teacher_dir, plan.teacher_steps, directory,
                   plan.student_steps)
      state = loop.train_and_evaluate(
          rc, directory, stop_at_step=stop_at_step, init_params=teacher.params,
          objective=objective_of(registry.get_model(rc), plan, teacher.params))
      if int(state.step) < config.train.num_steps:
        return done  # stopped early: a rerun resumes this round
    done.append(directory)
  return done

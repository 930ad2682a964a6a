"""What `python -m bltdiff.main` does in each mode, as functions (the command
line, tests and benchmarks all go through them)."""

import json

import jax
from etils import epath

from bltdiff import sharding
from bltdiff import data_chain
from bltdiff.training import (checkpointing, distill as distillation_rounds, evaluation,
                              export as inference_export, loop, restore, steps)


def train(config, workdir: str, stop_at_step: int | None = None):
  """Resolves the run's data chain, then trains (resuming from workdir).
  Returns the final TrainState. A config that cannot resume the run already in
  workdir stops first, before any data work."""
  checkpointing.check_resumable(config, workdir)
  config = data_chain.prepare_run_data(config, workdir)
  return loop.train_and_evaluate(config, workdir, stop_at_step=stop_at_step)


def distill(config, workdir: str, stop_at_step: int | None = None) -> list[str]:
  """Distillation rounds from config.distill.teacher into workdir/round_*
  (bltdiff/training/distill.py), resuming where they stopped. Returns the
  round directories finished."""
  return distillation_rounds.distill(config, workdir, stop_at_step=stop_at_step)


def evaluate(workdir: str) -> dict:
  """Bits per byte of the latest checkpoint on the validation split, with the
  run's own saved config; written to workdir/eval_step_<step>.json."""
  loaded = restore.load_for_inference(workdir)
  config = data_chain.prepare_run_data(loaded.config, workdir)  # checks the shards are there
  mesh, model = loaded.setup.mesh, loaded.model
  with sharding.activate(mesh):
    metrics = evaluation.evaluate(model, loaded.params, config, config.data.prepared_dir, mesh,
                                  steps.make_eval_step(model, mesh, loaded.setup.shardings.params))
  metrics['step'] = loaded.step
  step = loaded.step
  if jax.process_index() == 0:
    print(json.dumps(metrics, indent=2))
    (epath.Path(workdir) / f'eval_step_{step}.json').write_text(json.dumps(metrics, indent=2))
  return metrics


def export(workdir: str, export_dir: str, dtype: str = 'float32') -> dict:
  """Writes the latest checkpoint of the run in workdir as an inference export
  (bltdiff/training/export.py) and prints what it holds. Returns its metadata."""
  metadata = inference_export.write_export(workdir, export_dir, dtype)
  if jax.process_index() == 0:
    ent = ' and its entropy model' if metadata['entropy_model'] else ''
    print(f'exported step {metadata["step"]} of {workdir} ({metadata["weights"]} weights in '
          f'{dtype}{ent}) to {export_dir}; sample with: python -m bltdiff.main --mode=sample '
          f'--checkpoint={export_dir}')
  return metadata

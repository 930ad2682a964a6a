"""Checkpoints with orbax: the train state and the data iterator, saved together.

Layout of a run directory:
  workdir/config.json           the run config (rebuilds the model for eval/sample)
  workdir/checkpoints/<step>/state   params, their EMA (if on), optimizer state, step, RNG
                                     (orbax; the TrainState of bltdiff.training.state)
  workdir/checkpoints/<step>/data    grain iterator state, one JSON per process
Saving both in one checkpoint is what makes a resumed run see exactly the
batches an uninterrupted run would have seen.
"""

import dataclasses
import json
import os

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from bltdiff.errors import BltdiffError


def _path(workdir: str) -> epath.Path:
  """Local or cloud (gs://...) run directories alike, through etils.epath."""
  return epath.Path(workdir if '://' in str(workdir) else os.path.abspath(workdir))


def checkpoint_dir(workdir: str) -> str:
  return str(_path(workdir) / 'checkpoints')


def save_config(config, workdir: str):
  if jax.process_index() == 0:
    _path(workdir).mkdir(parents=True, exist_ok=True)
    (_path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))


# (section, field, value for runs saved before it): each value is the old behaviour.
FIELDS_ADDED_LATER = (('train', 'ema_rate', 0.0),)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = _path(workdir) / 'config.json'
  if not path.exists():
    raise BltdiffError(f'no trained run in {workdir}: {path} is missing')
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  # Runs saved before a field existed get the value that keeps their behaviour.
  for section, field, value in FIELDS_ADDED_LATER:
    if section in config and field not in config[section]:
      config[section][field] = value
  return config


def make_manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'data': grain.checkpoint.CheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator=None):
  items = {'state': ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items))


def restore(manager: ocp.CheckpointManager, abstract_state, data_iterator=None, step=None):
  """Restores (state, step) into the shapes and shardings of abstract_state and,
  if given, rewinds data_iterator in place. Returns (None, 0) without a checkpoint."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None, 0
  # Checkpoints saved before a field of the state existed (the EMA) lack it:
  # they restore into a state whose field is empty (None), the old behaviour.
  saved = set(manager.item_metadata(step)['state'].keys())
  absent = {f.name for f in dataclasses.fields(abstract_state)
            if f.name not in saved and getattr(abstract_state, f.name) is None}
  target = abstract_state
  if absent:
    target = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)
              if f.name not in absent}
  items = {'state': ocp.args.StandardRestore(target)}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))['state']
  if absent:
    restored = abstract_state.replace(**restored)
  return restored, step

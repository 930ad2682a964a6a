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
from absl import logging
from etils import epath

from bltdiff.errors import BltdiffError, ConfigError


def _path(workdir: str) -> epath.Path:
  """Local or cloud (gs://...) run directories alike, through etils.epath."""
  return epath.Path(workdir if '://' in str(workdir) else os.path.abspath(workdir))


def checkpoint_dir(workdir: str) -> str:
  return str(_path(workdir) / 'checkpoints')


# Fields that hold paths: saved relative to the run directory when inside it,
# so a run copied or moved elsewhere still finds its data and entropy model.
PATH_FIELDS = ('data.prepared_dir', 'patching.entropy_model')

# Fields that decide the shapes of the train state: a run cannot resume with
# other values ('model' = every field of the section but those that leave the
# parameters' shapes alone, which a resumed run may change).
STATE_FIELDS = ('model', 'data.seq_len', 'patching.max_patch_len', 'patching.num_slots',
                'train.ema_rate', 'train.grad_accum_steps')
SHAPE_FREE_MODEL_FIELDS = ('model.dropout', 'model.dtype', 'model.schedule', 'model.schedule_eps',
                           'model.attention_window', 'model.slot_weighting', 'model.masking',
                           'model.visible_weight', 'model.dec_order_bias',
                           'model.dec_nelbo_draws', 'model.dec_two_stream',
                           'model.dec_block_queries', 'model.dec_lookahead')

# (section, field, value for runs saved before it, a field the section must have
# for it to apply: the latent model's decoder options, not byte models'): each
# value is the old behaviour.
FIELDS_ADDED_LATER = (('train', 'ema_rate', 0.0, None),
                      ('model', 'dec_entropy_head', False, 'decoder_mode'),
                      ('model', 'dec_previous_symbol', False, 'decoder_mode'),
                      ('model', 'dec_lookahead', 0, 'decoder_mode'))


def relative_to_run(path: str, workdir: str) -> str:
  """path as saved in the run: relative to workdir when inside it (local runs)."""
  if not path or '://' in str(path) or '://' in str(workdir):
    return path
  path, root = os.path.abspath(path), os.path.abspath(workdir)
  return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


def resolve_in_run(path: str, workdir: str) -> str:
  """The inverse of relative_to_run; absolute and cloud paths are kept."""
  if not path or os.path.isabs(path) or '://' in str(path):
    return path
  if '://' in str(workdir):
    return str(epath.Path(workdir) / path)
  return os.path.join(os.path.abspath(workdir), path)


def _fields(config, dotted: str):
  """(section, name) of a dotted field when the config has it, else None."""
  section, name = dotted.split('.')
  if config.get(section) is None or name not in config[section]:
    return None
  return config[section], name


def save_config(config, workdir: str):
  """workdir/config.json; written only once the state it describes exists or
  restored (bltdiff.training.loop), so a failed command never changes it."""
  if jax.process_index() != 0:
    return
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for dotted in PATH_FIELDS:
      where = _fields(config, dotted)
      if where is not None:
        where[0][where[1]] = relative_to_run(where[0][where[1]], workdir)
  _path(workdir).mkdir(parents=True, exist_ok=True)
  (_path(workdir) / 'config.json').write_text(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config, its paths resolved against where the run is now."""
  path = _path(workdir) / 'config.json'
  if not path.exists():
    raise BltdiffError(f'no trained run in {workdir}: {path} is missing')
  try:
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
  except json.JSONDecodeError as e:
    raise BltdiffError(f'{path} is not valid JSON ({e}); the run\'s config is damaged')
  # Runs saved before a field existed get the value that keeps their behaviour.
  for section, field, value, present_with in FIELDS_ADDED_LATER:
    if (section in config and field not in config[section]
        and (present_with is None or present_with in config[section])):
      config[section][field] = value
  for dotted in PATH_FIELDS:
    where = _fields(config, dotted)
    if where is not None:
      where[0][where[1]] = resolve_in_run(where[0][where[1]], workdir)
  return config


def _flat(value, prefix: str) -> dict:
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    items = value.items() if isinstance(value, dict) else value.to_dict().items()
    out = {}
    for k, v in items:
      out.update(_flat(v, f'{prefix}.{k}'))
    return out
  if isinstance(value, tuple):  # config.json stores tuples as lists: compare values, not types
    value = list(value)
  return {prefix: value}


def check_resumable(config, workdir: str):
  """Raises ConfigError naming every field that decides the train state's
  shapes (STATE_FIELDS) and differs between config and the run saved in
  workdir: resuming would fail in orbax, or train another model. No saved
  run: nothing to check."""
  if not (_path(workdir) / 'config.json').exists():
    return
  saved = load_config(workdir)
  diffs = []
  for dotted in STATE_FIELDS:
    section, _, name = dotted.partition('.')
    new = _flat(config.get(section) if not name else (config.get(section) or {}).get(name),
                dotted)
    old = _flat(saved.get(section) if not name else (saved.get(section) or {}).get(name),
                dotted)
    for field in sorted((set(new) | set(old)) - set(SHAPE_FREE_MODEL_FIELDS)):
      if new.get(field) != old.get(field):
        diffs.append(f'{field}={old.get(field)!r} in the run, {new.get(field)!r} now')
  if diffs:
    raise ConfigError(f'{workdir} holds a run trained with other shapes: '
                      f'{"; ".join(diffs)}; train into another --workdir, or use the run\'s '
                      f'values')


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


def restore(manager: ocp.CheckpointManager, abstract_state, data_iterator=None, step=None,
            set_aside_damaged: bool = False):
  """Restores (state, step) into the shapes and shardings of abstract_state and,
  if given, rewinds data_iterator in place. Returns (None, 0) without a checkpoint.

  Without `step`, a latest checkpoint that does not restore (corrupted,
  truncated, half-written by a killed process) is reported in one warning
  line and the newest older step that restores is used: always, by default.
  set_aside_damaged (training): the damaged steps are moved to
  workdir/checkpoints_damaged/<step>, kept for inspection, so the resumed run
  can save those steps again. With `step`, that step or a one-line error."""
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  damaged = []
  for candidate in steps:
    try:
      restored = _restore_step(manager, abstract_state, data_iterator, candidate)
    except Exception as e:  # orbax/tensorstore raise many types for a damaged step
      reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
      damaged.append(candidate)
      if step is not None:
        raise BltdiffError(f'checkpoint step {candidate} in {manager.directory} does not restore: '
                           f'{reason}')
      logging.warning('checkpoint step %d in %s does not restore (%s); trying the one before',
                      candidate, manager.directory, reason)
      continue
    if damaged and set_aside_damaged:
      _set_aside(manager, damaged)
    return restored, candidate
  if damaged:
    raise BltdiffError(f'no checkpoint in {manager.directory} restores (steps '
                       f'{", ".join(map(str, damaged))} are damaged); train into a new --workdir')
  return None, 0


def _restore_step(manager, abstract_state, data_iterator, step):
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
  return restored


def _set_aside(manager, steps):
  if jax.process_index() == 0:
    aside = epath.Path(manager.directory).parent / 'checkpoints_damaged'
    aside.mkdir(parents=True, exist_ok=True)
    for step in steps:
      (epath.Path(manager.directory) / str(step)).rename(aside / str(step))
      logging.warning('moved damaged checkpoint step %d to %s', step, aside / str(step))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('bltdiff:set_aside_damaged')
  manager.reload()

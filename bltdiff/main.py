r"""bltdiff's one entry point.

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo
                         [--mode=train|eval|sample|export] [--config.train.num_steps=1000 ...]
  python -m bltdiff.main --mode=sample --checkpoint=EXPORT_DIR [sampling flags]

train (default): trains, evaluates and writes samples periodically, resuming
  from the latest checkpoint in --workdir if there is one. A distillation
  config (a `distill` section, no model: configs/distill_demo.py) runs the
  rounds of bltdiff/training/distill.py instead, into --workdir/round_*.
eval: bits per byte of the latest checkpoint on the validation split.
sample: samples from the latest checkpoint, or from an export with
  --checkpoint (no --config needed); see bltdiff/generate.py for flags.
export: writes the latest checkpoint as a self-contained inference export to
  --export_dir (bltdiff/training/export.py), optionally --export_dtype=bfloat16.
eval_task: targets for held-out pairs, scored (runs trained with data.format=pairs;
  see bltdiff/eval_task.py for flags).

Multi-process (multi-host) runs start the same command on every host, plus
  --distributed=auto                      TPU VM pods, SLURM, Open MPI (JAX detects them)
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I   anything else
(see bltdiff/distributed.py and launch/README.md). One process needs neither.
"""

import logging as py_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bltdiff import sample_flags  # noqa: F401  (defines the sampling flags)
from bltdiff import task_flags  # noqa: F401  (defines the eval_task flags)
from bltdiff import config_checks
from bltdiff.errors import BltdiffError, ConfigError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Run config (a get_config() file).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, samples. '
                               'Defaults to runs/<config file name>.')
_STOP_AT = flags.DEFINE_integer('stop_at_step', None, 'Train: stop (with a checkpoint) after this '
                                'step, keeping the schedule of train.num_steps; rerun to resume.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'sample', 'export', 'eval_task'],
                          'What to do.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Sample: an export directory '
                                  '(--mode=export) to sample from instead of --workdir.')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None, 'Export: the directory to write (new).')
_EXPORT_DTYPE = flags.DEFINE_enum('export_dtype', 'float32', ['float32', 'bfloat16'],
                                  'Export: dtype of the stored parameters.')
# Multi-process (multi-host) runs; see bltdiff/distributed.py and launch/README.md.
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', None, ['off', 'auto', 'explicit'],
    'Start jax.distributed: auto = let JAX detect the cluster (TPU VM pods, SLURM, Open MPI); '
    'explicit = use --coordinator_address/--num_processes/--process_id. Default: explicit when '
    'a coordinator address and more than one process are given, else off (one process).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 (env BLTDIFF_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Number of JAX processes (env BLTDIFF_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process, in [0, num_processes) (env BLTDIFF_PROCESS_ID).')
_LOCAL_DEVICES = flags.DEFINE_string('local_device_ids', None,
                                     'Comma-separated device ids this process owns, e.g. one GPU per '
                                     'process (env BLTDIFF_LOCAL_DEVICE_IDS). Default: all visible.')


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join('runs', name)


class _QuietLibraries(py_logging.Filter):
  """Drops INFO chatter of orbax and grain (dozens of lines per checkpoint);
  their warnings and errors still show."""

  def filter(self, record):
    noisy = any(part in record.pathname
                for part in ('/orbax/', '/grain/', '/tensorstore/', 'xla_bridge'))
    return not (noisy and record.levelno < py_logging.WARNING)


def parse_flags(argv):
  """absl's flag parsing, with a config override that names no field of the
  config (`--config.train.nonexistent=1`) reported as one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: no such field
    field = str(e).strip('\'"')
    given = [a.split('=')[0] for a in argv
             if a.startswith('--config.') and field in a.split('=')[0].split('.')]
    if not given:
      raise  # not an override: a bug in the config file itself shows as one
    sys.exit(f'error: {given[0][2:]}: no such config field (see the config file, or '
             f'configs/common.py for every field)')
  except flags.Error as e:
    sys.exit(f'error: {e}')


def check_devices(config):
  """The mesh of the run (and of its entropy model's run) against the devices
  there are, before any data or training work."""
  import jax  # imported here: a config error before this needs no JAX backend
  from bltdiff import sharding
  for name, c in (('', config), ('entropy_model.', config.get('entropy_model'))):
    if c is None or c.get('mesh') is None:
      continue
    try:
      data, fsdp, _ = sharding.mesh_shape(c.mesh, jax.device_count())
    except ValueError as e:
      raise ConfigError(f'{name}{e} (jax sees {jax.device_count()} devices)')
    validate_config(c, num_batch_shards=data * fsdp)


def validate_config(config, num_batch_shards: int = 1):
  """A run config, or a distillation config (configs/distill_demo.py)."""
  if config_checks.is_distillation(config):
    config_checks.validate_distill(config, num_batch_shards)
  else:
    config_checks.validate(config, num_batch_shards)


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from_export = _MODE.value == 'sample' and _CHECKPOINT.value is not None
  if _CHECKPOINT.value is not None and _MODE.value != 'sample':
    raise app.UsageError('--checkpoint: only --mode=sample reads an export')
  if (_EXPORT_DIR.value is None) != (_MODE.value != 'export'):
    raise app.UsageError('--export_dir: --mode=export needs it, and only it takes it')
  # eval, sample and export read the trained run's own config: --workdir suffices.
  if _CONFIG.value is None and not from_export and (_MODE.value == 'train' or
                                                    _WORKDIR.value is None):
    raise app.UsageError('--config is required, e.g. --config=configs/demo.py (eval, sample '
                         'and export need only --workdir)')
  config = _CONFIG.value
  from bltdiff import distributed  # before any JAX computation
  try:
    distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                           _PROCESS_ID.value, _LOCAL_DEVICES.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  workdir = _WORKDIR.value or (
      None if config is None else default_workdir(flags.FLAGS['config'].config_filename))
  try:
    # Fail on a bad field before anything is compiled, read or logged.
    if config is not None:
      validate_config(config)
    if _MODE.value == 'train':
      check_devices(config)
      from bltdiff import commands  # imported here: a config error needs none of it
      if config_checks.is_distillation(config):
        commands.distill(config, workdir, stop_at_step=_STOP_AT.value)
      else:
        commands.train(config, workdir, stop_at_step=_STOP_AT.value)
    elif _MODE.value == 'eval':
      from bltdiff import commands
      commands.evaluate(workdir)  # the trained run's own config decides
    elif _MODE.value == 'export':
      from bltdiff import commands
      commands.export(workdir, _EXPORT_DIR.value, _EXPORT_DTYPE.value)
    elif _MODE.value == 'eval_task':
      from bltdiff import eval_task
      eval_task.run_eval_task_command(workdir)  # the trained runs' own configs decide
    else:
      from bltdiff import generate
      generate.run_sample_command(workdir, checkpoint=_CHECKPOINT.value)
  except BltdiffError as e:
    logging.flush()
    signum = getattr(e, 'signum', None)  # bltdiff.training.preemption.Interrupted
    if signum is not None:
      print(f'stopped: {e}', file=sys.stderr)
      sys.exit(128 + signum)
    sys.exit(f'error: {e}')
  except KeyboardInterrupt:
    logging.flush()
    print('stopped: interrupted (Ctrl-C) outside a train step; work done so far is kept '
          '(data preparation and training resume where they stopped): rerun the same command',
          file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

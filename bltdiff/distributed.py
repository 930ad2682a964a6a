"""Multi-process (multi-host) start-up: `jax.distributed.initialize` from flags or env.

JAX's multi-controller runtime runs one Python process per host (per GPU on
some GPU setups); every process runs the same program, sees all devices of the
job in `jax.devices()` and its own in `jax.local_devices()`. This module starts
that runtime before anything else touches JAX:

  initialize()                                    one process: does nothing
  initialize(mode='auto')                         TPU VM pods, SLURM, Open MPI:
                                                  JAX finds coordinator and ids itself
  initialize(coordinator_address='host0:1234',    explicit (plain ssh, any cluster)
             num_processes=N, process_id=i)

Explicit values may also come from the environment (BLTDIFF_COORDINATOR_ADDRESS,
BLTDIFF_NUM_PROCESSES, BLTDIFF_PROCESS_ID, BLTDIFF_LOCAL_DEVICE_IDS), so that a
launcher can export them once per host.

On CPU (tests, debugging), cross-process collectives need a CPU collectives
implementation; gloo is selected before initialization.
"""

import os

import jax
from absl import logging

ENV_PREFIX = 'BLTDIFF_'
MODES = ('off', 'auto', 'explicit')


def _env(name: str, default=None):
  return os.environ.get(ENV_PREFIX + name, default)


def resolve(mode: str | None = None, coordinator_address: str | None = None,
            num_processes: int | None = None, process_id: int | None = None,
            local_device_ids: str | None = None) -> dict | None:
  """The keyword arguments for jax.distributed.initialize, or None for a single process.

  mode: 'off' (never initialize), 'auto' (plain `jax.distributed.initialize()`,
  which detects TPU VM pods, SLURM and Open MPI), 'explicit' (needs coordinator,
  count and id), or None: 'explicit' if a coordinator address is given (flag or
  env) and the process count is above one, otherwise 'off'."""
  coordinator_address = coordinator_address or _env('COORDINATOR_ADDRESS')
  num_processes = num_processes if num_processes is not None else _int_or_none(_env('NUM_PROCESSES'))
  process_id = process_id if process_id is not None else _int_or_none(_env('PROCESS_ID'))
  local_device_ids = local_device_ids or _env('LOCAL_DEVICE_IDS')
  if mode is None:
    mode = 'explicit' if coordinator_address and (num_processes or 1) > 1 else 'off'
  if mode not in MODES:
    raise ValueError(f'--distributed: expected one of {MODES}, got {mode!r}')
  if mode == 'off':
    return None
  kwargs = {}
  if mode == 'explicit':
    missing = [n for n, v in (('coordinator_address', coordinator_address),
                              ('num_processes', num_processes), ('process_id', process_id))
               if v is None]
    if missing:
      raise ValueError(f'--distributed=explicit needs {", ".join(missing)} (flags --{missing[0]} '
                       f'or env {ENV_PREFIX}{missing[0].upper()})')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id={process_id} not in [0, --num_processes={num_processes})')
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  else:  # auto: anything given explicitly still overrides the cluster detection
    for name, value in (('coordinator_address', coordinator_address),
                        ('num_processes', num_processes), ('process_id', process_id)):
      if value is not None:
        kwargs[name] = value
  if local_device_ids:
    kwargs['local_device_ids'] = [int(i) for i in str(local_device_ids).split(',')]
  return kwargs


def _int_or_none(value):
  return None if value in (None, '') else int(value)


def _cpu_only() -> bool:
  platforms = os.environ.get('JAX_PLATFORMS', '') or str(jax.config.jax_platforms or '')
  return platforms.strip().lower() == 'cpu'


def initialize(mode: str | None = None, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               local_device_ids: str | None = None) -> bool:
  """Starts JAX's multi-process runtime if asked to; returns whether it did.

  Must run before the first JAX computation (it is the first thing main() does).
  A no-op for one process, and when already initialized."""
  kwargs = resolve(mode, coordinator_address, num_processes, process_id, local_device_ids)
  if kwargs is None:
    return False
  if is_initialized():
    return True
  if _cpu_only():
    # CPU devices of different processes talk through gloo (TCP).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  logging.info('jax.distributed.initialize(%s)', kwargs or '')
  jax.distributed.initialize(**kwargs)
  logging.info('process %d of %d; %d local devices of %d', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def is_initialized() -> bool:
  try:
    from jax._src import distributed as _dist  # no public query in jax 0.10
    return _dist.global_state.client is not None
  except (ImportError, AttributeError):
    return False


def is_main_process() -> bool:
  """Process 0 writes metrics, samples and reports; every process checkpoints."""
  return jax.process_index() == 0

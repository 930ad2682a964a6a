"""Subprocess side of tests/test_multiprocess.py.

  python tests/mp_worker.py multi SPEC.json COORDINATOR PROCESS_ID   (one of two JAX processes)
  python tests/mp_worker.py ref SPEC.json                            (the single-process reference)

multi: joins a two-process JAX job (jax.distributed over loopback, CPU devices,
gloo collectives), trains through the real trainer to step `stop_at`, stops
with a checkpoint, then resumes in a second call to num_steps: every process
restores the one checkpoint. Process 0 writes the final parameters.
ref: one process with as many devices as the whole job; feeds the same global
batches (process 0's rows, then process 1's) through the same train step.
"""

import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_config  # noqa: E402

NUM_PROCESSES = 2


def load(spec_path):
  spec = json.load(open(spec_path))
  return spec, tiny_config(spec['corpus'], **spec['overrides'])


def save_params(path, params):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  np.savez(path, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in flat})


def multi(spec_path, coordinator, process_id):
  from bltdiff import distributed
  assert distributed.initialize(coordinator_address=coordinator, num_processes=NUM_PROCESSES,
                                process_id=int(process_id))
  from jax.experimental import multihost_utils
  from bltdiff import commands
  spec, config = load(spec_path)
  assert jax.process_count() == NUM_PROCESSES and jax.device_count() > jax.local_device_count()
  workdir = spec['workdir']
  commands.train(config, workdir, stop_at_step=spec['stop_at'])
  multihost_utils.sync_global_devices('first run done')
  state = commands.train(config, workdir)  # resumes from the checkpoint
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if jax.process_index() == 0:
    save_params(os.path.join(workdir, 'final_params.npz'), params)
  with open(os.path.join(workdir, f'done_{jax.process_index()}.json'), 'w') as f:
    json.dump({'process_index': jax.process_index(), 'local_devices': jax.local_device_count(),
               'devices': jax.device_count()}, f)


def ref(spec_path):
  from bltdiff import sharding
  from bltdiff.data import pipeline
  from bltdiff.training import state as train_state, steps
  spec, config = load(spec_path)
  run = train_state.setup(config)
  mesh, model, tx, lr, shardings = run.mesh, run.model, run.tx, run.lr_schedule, run.shardings
  per_process = config.train.batch_size // NUM_PROCESSES
  iterators = [pipeline.make_iterator(
      config.data, config.data.prepared_dir, 'train', batch_size=per_process, seed=config.seed,
      process_index=p, process_count=NUM_PROCESSES) for p in range(NUM_PROCESSES)]
  losses = []
  with sharding.activate(mesh):
    state = train_state.create_train_state(model, tx, config, mesh, shardings)
    step = steps.make_train_step(model, tx, lr, mesh, shardings,
                                 steps.train_metric_names(model, config))
    for _ in range(config.train.num_steps):
      parts = [next(it) for it in iterators]
      batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
      state, metrics = step(state, sharding.global_batch(batch, mesh))
      losses.append(float(metrics.compute()['loss']))
  os.makedirs(spec['workdir'], exist_ok=True)
  save_params(os.path.join(spec['workdir'], 'final_params.npz'), state.params)
  with open(os.path.join(spec['workdir'], 'losses.json'), 'w') as f:
    json.dump(losses, f)


if __name__ == '__main__':
  if sys.argv[1] == 'multi':
    multi(*sys.argv[2:])
  else:
    ref(*sys.argv[2:])

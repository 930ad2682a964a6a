"""Subprocess side of tests/test_mesh.py: one train step per (model, mesh) on
fake CPU devices, compared with the same step on one device.

The device count must be fixed before JAX starts, so test_mesh.py runs this file
with XLA_FLAGS=--xla_force_host_platform_device_count=8 and JAX_PLATFORMS=cpu:

  python tests/mesh_worker.py SPEC.json OUT.json

SPEC: {"corpus": glob, "cases": [{"name", "overrides": {...}, "sections": {...},
                                   "meshes": {name: {data, fsdp, tensor}}}]}
OUT:  {case: {mesh: {"losses": [...], "max_param_diff": float, "specs": {path: spec},
                     "shard_shapes": {path: [..]}, "replicated": {path: bool},
                     "opt_specs_match": bool}}}
Each mesh runs two steps: the first loss checks the forward pass, the second
one the sharded gradients and optimizer update.
"""

import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_config, tiny_latent_config  # noqa: E402

from bltdiff import config_checks, sharding  # noqa: E402
from bltdiff.models import registry  # noqa: E402
from bltdiff.training import optimizer, state as train_state, steps  # noqa: E402

NUM_STEPS = 2


def run_mesh(config, mesh_devices, batches):
  mesh = sharding.make_mesh(config.mesh, devices=mesh_devices)
  config_checks.validate(config, num_batch_shards=mesh.shape['data'] * mesh.shape['fsdp'])
  model = registry.get_model(config)
  tx, lr = optimizer.make_optimizer(config.train)
  _, shardings = train_state.state_shardings(model, tx, config, mesh)
  with sharding.activate(mesh):
    state = train_state.create_train_state(model, tx, config, mesh, shardings)
    step = steps.make_train_step(model, tx, lr, mesh, shardings,
                                 steps.train_metric_names(model, config))
    losses = []
    for b in batches:
      state, metrics = step(state, sharding.global_batch(b, mesh))
      losses.append(float(metrics.compute()['loss']))
  return state, losses


def path_str(path):
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def main(spec_path, out_path):
  spec = json.load(open(spec_path))
  rng = np.random.RandomState(0)
  out = {}
  for case in spec['cases']:
    make = tiny_latent_config if case.get('latent') else tiny_config
    config = make(spec['corpus'], **case['overrides'])
    n, b = config.data.seq_len, config.train.batch_size
    batches = [{'tokens': rng.randint(32, 127, (b, n)).astype(np.int32)} for _ in range(NUM_STEPS)]
    if config.data.use_entropies:
      for x in batches:
        x['entropies'] = rng.uniform(0, 3, (b, n)).astype(np.float32)
    config.mesh = dict(data=1, fsdp=1, tensor=1)
    ref_state, ref_losses = run_mesh(config, jax.devices()[:1], batches)
    ref_params = jax.tree.map(np.asarray, ref_state.params)
    results = {'one_device': {'losses': ref_losses}}
    for name, mesh_config in case['meshes'].items():
      config.mesh = dict(mesh_config)
      state, losses = run_mesh(config, jax.devices(), batches)
      diffs = jax.tree.map(lambda a, r: float(np.max(np.abs(np.asarray(a) - r))), state.params,
                           ref_params)
      flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
      specs = {path_str(p): str(tuple(x.sharding.spec)) for p, x in flat}
      shard_shapes = {path_str(p): list(x.addressable_shards[0].data.shape) for p, x in flat}
      replicated = {path_str(p): bool(x.sharding.is_fully_replicated) for p, x in flat}
      # Adam's first moment must be laid out like the parameters it tracks.
      mu = _find_mu(state.opt_state)
      opt_match = mu is not None and all(
          a.sharding.spec == m.sharding.spec
          for a, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(mu)))
      results[name] = {'losses': losses, 'max_param_diff': max(jax.tree.leaves(diffs)),
                       'specs': specs, 'shard_shapes': shard_shapes, 'replicated': replicated,
                       'opt_specs_match': bool(opt_match), 'mesh': dict(mesh_config)}
    out[case['name']] = results
  with open(out_path, 'w') as f:
    json.dump(out, f, indent=1)


def _find_mu(opt_state):
  found = []

  def visit(x):
    if hasattr(x, 'mu') and hasattr(x, 'nu'):
      found.append(x.mu)
      return
    if isinstance(x, (tuple, list)):
      for y in x:
        visit(y)
    elif hasattr(x, 'inner_opt_state'):
      visit(x.inner_opt_state)

  visit(opt_state)
  return found[0] if found else None


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])

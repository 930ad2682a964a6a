"""Scale features on one device: gradient accumulation, bf16 compute with fp32
master weights, the MFU bookkeeping, and the jax.distributed flag handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import distributed, sharding
from bltdiff.models import registry
from bltdiff.training import mfu, state as train_state, steps


def _build(config):
  run = train_state.setup(config)
  with sharding.activate(run.mesh):
    state = train_state.create_train_state(run.model, run.tx, config, run.mesh, run.shardings)
    step = steps.make_train_step(run.model, run.tx, run.lr_schedule, run.mesh, run.shardings,
                                 steps.train_metric_names(run.model, config))
  return run.mesh, run.model, state, step


def test_grad_accumulation_matches_one_big_step(make_config):
  """k micro-steps of B/k sequences apply the same update as one step of B
  (byte AR: the loss is deterministic, so the mean of micro-batch gradients
  is exactly the big batch's gradient)."""
  rng = np.random.RandomState(0)
  big = {'tokens': rng.randint(32, 127, (8, 32)).astype(np.int32)}
  base = {'model.kind': 'byte_ar', 'train.warmup_steps': 0, 'train.learning_rate': 1e-2}
  mesh, _, state, step = _build(make_config(**base))
  with sharding.activate(mesh):
    one, _ = step(state, sharding.global_batch(big, mesh))
  k = 4
  config = make_config(**base, **{'train.batch_size': 8 // k, 'train.grad_accum_steps': k})
  mesh, _, state, step = _build(config)
  init = jax.tree.map(np.asarray, state.params)
  with sharding.activate(mesh):
    for i in range(k):
      micro = {'tokens': big['tokens'][i * 2:(i + 1) * 2]}
      state, _ = step(state, sharding.global_batch(micro, mesh))
      if i < k - 1:  # nothing is applied before the k-th micro-step
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), init)
  moved = 0
  for a, b, p0 in zip(jax.tree.leaves(state.params), jax.tree.leaves(one.params),
                      jax.tree.leaves(init)):
    # Adam's first update is ~lr * g/(|g| + eps): where a gradient is ~0,
    # summation order alone moves it by a fraction of lr (1.07% seen on a
    # loaded 2-core CI machine), so allow 10% of lr here; the next line holds
    # all but 1% of the parameters to 1e-6.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3)
    assert np.mean(np.abs(np.asarray(a) - np.asarray(b)) < 1e-6) > 0.99
    moved += int(np.any(np.asarray(b) != p0))
  assert moved == len(jax.tree.leaves(init))  # the comparison is not vacuous


def test_bf16_compute_keeps_fp32_master_weights(make_config):
  rng = np.random.RandomState(1)
  batch = {'tokens': rng.randint(32, 127, (8, 32)).astype(np.int32)}
  key = jax.random.PRNGKey(0)
  mesh, model, state, step = _build(make_config(**{'model.dtype': 'bfloat16'}))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  loss16, _ = model.loss(state.params, batch, key, train=False)
  assert loss16.dtype == jnp.float32  # softmax and loss in float32
  # The matmuls really run in bf16 (SwiGLU hidden activations) ...
  jaxpr = str(jax.make_jaxpr(lambda p: model.loss(p, batch, key, train=False))(state.params))
  assert 'bf16[8,32,64]' in jaxpr
  # ... close to the float32 model with the same weights ...
  model32 = registry.get_model(make_config())
  loss32, _ = model32.loss(state.params, batch, key, train=False)
  assert float(loss16) == pytest.approx(float(loss32), rel=0.02)
  # ... and a train step updates fp32 master weights.
  with sharding.activate(mesh):
    new, metrics = step(state, sharding.global_batch(batch, mesh))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new.params))
  assert np.isfinite(float(metrics.compute()['loss']))


def test_peak_flops_table_and_override():
  assert mfu.peak_flops_per_device(0.0, 'TPU v5 lite') == 197e12
  assert mfu.peak_flops_per_device(0.0, 'TPU v5') == 459e12
  assert mfu.peak_flops_per_device(0.0, 'TPU v4') == 275e12
  assert mfu.peak_flops_per_device(0.0, 'NVIDIA H200') == 989e12
  assert mfu.peak_flops_per_device(0.0, 'NVIDIA H100 80GB HBM3') == 989e12
  assert mfu.peak_flops_per_device(0.0, 'NVIDIA A100-SXM4-40GB') == 312e12
  assert mfu.peak_flops_per_device(0.0, 'cpu') == 0.0
  assert mfu.peak_flops_per_device(123.0, 'NVIDIA H200') == 123.0
  assert mfu.peak_flops_per_device(0.0) == 0.0  # this machine: CPU, MFU not logged
  assert mfu.mfu(1e12, steps=10, seconds=2.0, peak=1e13) == pytest.approx(0.5)
  assert mfu.mfu(1e12, steps=10, seconds=2.0, peak=0.0) == 0.0


def test_distributed_flags(monkeypatch):
  for name in ('COORDINATOR_ADDRESS', 'NUM_PROCESSES', 'PROCESS_ID', 'LOCAL_DEVICE_IDS'):
    monkeypatch.delenv(distributed.ENV_PREFIX + name, raising=False)
  assert distributed.resolve() is None  # one process: nothing to do
  assert not distributed.initialize()
  assert distributed.resolve('explicit', 'h:1', 2, 1) == dict(
      coordinator_address='h:1', num_processes=2, process_id=1)
  assert distributed.resolve(None, 'h:1', 2, 0)['process_id'] == 0  # implied explicit
  assert distributed.resolve('auto') == {}
  with pytest.raises(ValueError, match='process_id'):
    distributed.resolve('explicit', 'h:1', 2, None)
  with pytest.raises(ValueError, match='not in'):
    distributed.resolve('explicit', 'h:1', 2, 2)
  monkeypatch.setenv('BLTDIFF_COORDINATOR_ADDRESS', '10.0.0.1:8476')
  monkeypatch.setenv('BLTDIFF_NUM_PROCESSES', '4')
  monkeypatch.setenv('BLTDIFF_PROCESS_ID', '3')
  monkeypatch.setenv('BLTDIFF_LOCAL_DEVICE_IDS', '0,1')
  assert distributed.resolve() == dict(coordinator_address='10.0.0.1:8476', num_processes=4,
                                       process_id=3, local_device_ids=[0, 1])

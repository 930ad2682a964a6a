"""Sharded training on 8 fake CPU devices: data-parallel, fsdp and tensor-parallel
meshes give the same losses (and updated parameters) as one device, and the
parameters are really split across devices.

JAX fixes its device count when it starts, so the 8-device part runs in a
subprocess (tests/mesh_worker.py) with --xla_force_host_platform_device_count=8.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FAST_COMPILE

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

DATA = dict(data=8, fsdp=1, tensor=1)
MIXED = dict(data=2, fsdp=2, tensor=2)  # all three axes at once


def _cases():
  cases = [
      {'name': 'byte_mdlm', 'overrides': {}, 'meshes': {'data': DATA, 'mixed': MIXED}},
      {'name': 'byte_ar', 'overrides': {'model.kind': 'byte_ar'}, 'meshes': {'mixed': MIXED}},
  ]
  cases.append({'name': 'latent_mdlm', 'latent': True,
                'overrides': {'patching.mode': 'space', 'patching.static_size': 2,
                              'patching.max_patch_len': 8, 'patching.num_slots': 16},
                'meshes': {'mixed': MIXED}})
  return cases


def run_worker(script, args, env_extra, timeout):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, **env_extra)
  proc = subprocess.run([sys.executable, os.path.join(HERE, script), *args], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode:
    raise AssertionError(f'{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}')
  return proc


@pytest.fixture(scope='module')
def mesh_results(corpus_glob, tmp_path_factory):
  tmp = tmp_path_factory.mktemp('mesh')
  spec = tmp / 'spec.json'
  spec.write_text(json.dumps({'corpus': corpus_glob, 'cases': _cases()}))
  out = tmp / 'out.json'
  run_worker('mesh_worker.py', [str(spec), str(out)],
             {'XLA_FLAGS': '--xla_force_host_platform_device_count=8 ' + FAST_COMPILE}, timeout=240)
  return json.loads(out.read_text())


@pytest.mark.parametrize('case', ['byte_mdlm', 'byte_ar', 'latent_mdlm'])
def test_sharded_step_matches_one_device(mesh_results, case):
  if case not in mesh_results:
    pytest.skip(f'{case} is not registered in bltdiff.models')
  results = mesh_results[case]
  ref = results['one_device']['losses']
  for mesh, r in results.items():
    if mesh == 'one_device':
      continue
    # Step 1: the forward pass; step 2: after a sharded gradient + AdamW update.
    np.testing.assert_allclose(r['losses'], ref, rtol=2e-5, err_msg=f'{case} on {mesh}')
    assert r['max_param_diff'] < 1e-5, (case, mesh, r['max_param_diff'])
    assert r['opt_specs_match'], f'{case} on {mesh}: Adam moments not laid out like params'
    if mesh == 'mixed':  # every model's transformer weights really split
      kernels = [k for k in r['specs'] if k.endswith('self_attn/query/kernel')]
      assert kernels and not any(r['replicated'][k] for k in kernels), r['specs']


def test_parameters_are_really_sharded(mesh_results):
  mixed = mesh_results['byte_mdlm']['mixed']
  specs, shapes = mixed['specs'], mixed['shard_shapes']
  q = 'transformer/block_0/self_attn/query/kernel'  # [embed=32, heads=2, kv=16]
  assert specs[q] == "('fsdp', 'tensor', None)"
  assert shapes[q] == [16, 1, 16]  # a quarter of it on each device
  gate = 'transformer/block_0/mlp/gate/kernel'  # [embed=32, mlp=64]
  assert specs[gate] == "('fsdp', 'tensor')" and shapes[gate] == [16, 32]
  down = 'transformer/block_0/mlp/down/kernel'
  assert specs[down] == "('tensor', 'fsdp')" and shapes[down] == [32, 16]
  # The 257-symbol readout cannot split over tensor=2: that dimension stays whole.
  assert specs['readout/kernel'] == "('fsdp', None)" and shapes['readout/kernel'] == [16, 257]
  # Pure data parallelism replicates every parameter.
  data = mesh_results['byte_mdlm']['data']
  assert all(data['replicated'].values()), data['replicated']
  assert not any(mixed['replicated'][k] for k in (q, gate, down))

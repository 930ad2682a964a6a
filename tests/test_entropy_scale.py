"""Entropy scoring at scale: the same bytes whatever the number of devices and
processes.

- `EntropyModel.rows` (a 1-D mesh over the local devices, batch_size rows per
  device) equals, bit for bit, the single-device loop it replaced: one jitted
  call per batch_size rows.
- Shards prepared on 8 fake CPU devices (a subprocess, tests/entropy_worker.py)
  and by 3 processes splitting the shards are byte-identical to one device and
  one process, manifest included, whatever order the processes finish in.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import FAST_COMPILE

import entropy_worker
from bltdiff import entropy, vocab

HERE = os.path.dirname(os.path.abspath(__file__))


def files(directory) -> dict:
  return {n: open(os.path.join(directory, n), 'rb').read() for n in sorted(os.listdir(directory))
          if n != 'params.json'}


@pytest.fixture(scope='module')
def one_device(corpus_glob, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('one') / 'data')
  manifest = entropy_worker.prepare(corpus_glob, out)
  assert manifest['has_entropies'] and len(manifest['splits']['train']['shards']) >= 4
  return out


def test_rows_equal_the_single_device_loop():
  module, params = entropy_worker.tiny_model()
  model = entropy_worker.scorer()
  rows = np.random.default_rng(1).integers(0, 256, (11, 32)).astype(np.int32)
  # The loop as it was: one jitted call per batch_size rows, padded with BOUNDARY rows.
  old = jax.jit(lambda p, t: entropy.entropy_from_logits(module.apply({'params': p}, t)))
  padded = np.concatenate([rows, np.full((1, 32), vocab.BOUNDARY, np.int32)])
  expected = np.concatenate([np.asarray(old(params, padded[i:i + 4]))
                             for i in range(0, 12, 4)])[:11]
  np.testing.assert_array_equal(model.rows(rows), expected)
  assert model.rows(rows[:0]).shape == (0, 32)


def test_eight_devices_write_the_same_shards(corpus_glob, one_device, tmp_path):
  out = str(tmp_path / 'data')
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8 ' + FAST_COMPILE)
  proc = subprocess.run([sys.executable, os.path.join(HERE, 'entropy_worker.py'), corpus_glob, out],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == {'devices': 8}
  assert files(out) == files(one_device)


@pytest.mark.parametrize('order', [(1, 2, 0), (0, 2, 1)])
def test_processes_split_the_shards(corpus_glob, one_device, tmp_path, order):
  """Three processes without a barrier: each writes every third shard; only
  the last to finish (all markers present) writes the manifest."""
  out = str(tmp_path / 'data')
  for n, index in enumerate(order):
    manifest = entropy_worker.prepare(corpus_glob, out, process_index=index, process_count=3)
    last = n == len(order) - 1
    assert (manifest is not None) == last
    assert os.path.exists(os.path.join(out, 'manifest.json')) == last
  assert files(out) == files(one_device)
  # A rerun by any process finds the manifest and returns it.
  assert entropy_worker.prepare(corpus_glob, out, process_index=2, process_count=3) == manifest


def test_barrier_lets_process_zero_write_the_manifest(corpus_glob, one_device, tmp_path):
  """With a barrier (a multi-host JAX job), simulated by running process 1's
  shards first: process 0 writes the manifest after the barrier."""
  out = str(tmp_path / 'data')
  calls = []
  assert entropy_worker.prepare(corpus_glob, out, process_index=1, process_count=2) is None
  manifest = entropy_worker.prepare(corpus_glob, out, process_index=0, process_count=2,
                                    barrier=calls.append)
  assert calls == ['data_prep:shards_written', 'data_prep:manifest_written']
  assert manifest is not None and files(out) == files(one_device)

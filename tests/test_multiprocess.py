"""Two JAX processes on this machine (CPU, loopback coordinator, 2 fake devices
each) train through the real trainer, stop with a checkpoint, resume from it,
and match a single-process run on the same global batches step for step.

Both processes and the reference run as subprocesses with timeouts, so a hung
collective fails the test instead of blocking CI.
"""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

from conftest import FAST_COMPILE

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TIMEOUT = 180


def _env(num_devices):
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
              XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices} {FAST_COMPILE}')


@pytest.fixture(scope='module')
def runs(corpus_glob, tmp_path_factory):
  from bltdiff.data import pipeline
  from conftest import tiny_config
  tmp = tmp_path_factory.mktemp('multiprocess')
  # Prepared once up front: the usual recipe for multi-host runs (and the two
  # processes of this test share one disk anyway).
  prepared = pipeline.ensure_prepared(tiny_config(corpus_glob).data, str(tmp / 'prep'))
  overrides = {'data.prepared_dir': prepared, 'train.num_steps': 4, 'train.log_every': 1,
               'train.checkpoint_every': 100, 'train.eval_every': 100, 'train.eval_batches': 1,
               'train.sample_every': 100, 'sample.steps': 4, 'sample.num_samples': 2}
  specs = {}
  for name in ('multi', 'ref'):
    specs[name] = tmp / f'{name}.json'
    specs[name].write_text(json.dumps({'corpus': corpus_glob, 'overrides': overrides,
                                       'workdir': str(tmp / name), 'stop_at': 2}))
  worker = os.path.join(HERE, 'mp_worker.py')
  coordinator = f'localhost:{portpicker.pick_unused_port()}'
  procs = [subprocess.Popen([sys.executable, worker, 'multi', str(specs['multi']), coordinator,
                             str(i)], env=_env(2), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  procs.append(subprocess.Popen([sys.executable, worker, 'ref', str(specs['ref'])], env=_env(4),
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True))
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=TIMEOUT)[0])
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f'multi-process run did not finish in {TIMEOUT}s (hung collective?)')
  for name, p, out in zip(('process 0', 'process 1', 'reference'), procs, outputs):
    assert p.returncode == 0, f'{name} failed:\n{out[-5000:]}'
  return tmp / 'multi', tmp / 'ref'


def test_two_processes_match_one(runs):
  multi, ref = runs
  for i in range(2):
    done = json.loads((multi / f'done_{i}.json').read_text())
    assert done == {'process_index': i, 'local_devices': 2, 'devices': 4}
  rows = [json.loads(l) for l in (multi / 'metrics.jsonl').read_text().splitlines()]
  train_rows = {r['step']: r['train_loss'] for r in rows if 'train_loss' in r}
  # Steps 1-2 ran in the first call, 3-4 after restoring the step-2 checkpoint.
  assert sorted(train_rows) == [1, 2, 3, 4]
  ref_losses = json.loads((ref / 'losses.json').read_text())
  np.testing.assert_allclose([train_rows[s] for s in (1, 2, 3, 4)], ref_losses, rtol=1e-5)
  a, b = np.load(multi / 'final_params.npz'), np.load(ref / 'final_params.npz')
  assert sorted(a.files) == sorted(b.files)
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)
  # Eval ran on both processes (a collective) and process 0 logged it; samples too.
  assert any('eval_bpb' in r and np.isfinite(r['eval_bpb']) for r in rows)
  assert (multi / 'samples' / 'step_0000004.txt').exists()


def test_one_checkpoint_from_all_processes(runs):
  multi, _ = runs
  ckpt = multi / 'checkpoints'
  assert sorted(os.listdir(ckpt)) == ['2', '4']
  # The data iterator state: one file per process, in the same checkpoint.
  data_files = sorted(os.listdir(ckpt / '2' / 'data'))
  assert len([f for f in data_files if 'process' in f]) == 2, data_files

"""A training process killed (SIGKILL) mid-run resumes exactly where it was:
same data batches (the grain iterator state is in the checkpoint) and so
bit-identical parameters to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from bltdiff import commands
from bltdiff.training import checkpointing, restore

WORKER = '''
import json, sys
import ml_collections
from bltdiff import commands
config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
commands.train(config, sys.argv[2])
'''


def completed_steps(workdir):
  path = checkpointing.checkpoint_dir(workdir)
  if not os.path.isdir(path):
    return []
  return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def test_killed_run_resumes_bit_identically(make_config, tmp_path):
  # A long schedule that the worker never finishes; checkpoints every 2 steps.
  config = make_config(**{'train.num_steps': 10_000, 'train.checkpoint_every': 2,
                          'train.log_every': 1000, 'train.keep_checkpoints': 10})
  killed = str(tmp_path / 'killed')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  worker = subprocess.Popen([sys.executable, '-c', WORKER, config.to_json(), killed], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while time.time() < deadline and not [s for s in completed_steps(killed) if s >= 4]:
      assert worker.poll() is None, 'the worker ended before it was killed'
      time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
  finally:
    if worker.poll() is None:
      worker.kill()
  resumed_from = completed_steps(killed)[-1]
  assert resumed_from >= 4
  stop = resumed_from + 2
  commands.train(config, killed, stop_at_step=stop)
  straight = str(tmp_path / 'straight')
  commands.train(config, straight, stop_at_step=stop)
  a = restore.restore_params(killed, step=stop)[1]
  b = restore.restore_params(straight, step=stop)[1]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

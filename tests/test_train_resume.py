"""Training end to end: bpb falls, samples are written, resume is bit-exact."""

import glob
import json
import os

import jax
import numpy as np

from bltdiff import commands, sharding
from bltdiff import data_chain
from bltdiff.training import checkpointing, evaluation, restore, state, steps


def params_of(workdir):
  _, params = restore.restore_params(workdir)
  return jax.tree.map(np.asarray, params)


def test_resume_is_bit_identical(make_config, tmp_path):
  config = make_config(**{'train.num_steps': 6, 'train.checkpoint_every': 100})
  # Uninterrupted: 6 steps.
  commands.train(config, str(tmp_path / 'straight'))
  # Interrupted after 3 steps, then resumed to 6 in a fresh call.
  interrupted = str(tmp_path / 'interrupted')
  commands.train(config, interrupted, stop_at_step=3)
  assert sorted(os.listdir(checkpointing.checkpoint_dir(interrupted))) == ['3']
  commands.train(config, interrupted)
  a, b = params_of(str(tmp_path / 'straight')), params_of(interrupted)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_training_lowers_bpb_and_writes_samples(make_config, tmp_path):
  config = make_config(**{'train.num_steps': 30, 'train.learning_rate': 3e-3,
                          'train.eval_every': 30, 'train.sample_every': 30,
                          'train.log_every': 10})
  workdir = str(tmp_path / 'run')
  commands.train(config, workdir)
  samples = glob.glob(os.path.join(workdir, 'samples', 'step_*.txt'))
  assert samples and '=== sample 0 ===' in open(samples[0]).read()
  # bits per byte, from the TensorBoard-free source: an eval of the first and last params.
  config = data_chain.prepare_run_data(config, workdir)
  run = state.setup(config)
  mesh, model, prepared = run.mesh, run.model, config.data.prepared_dir
  eval_step = steps.make_eval_step(model, mesh, run.shardings.params)
  with sharding.activate(mesh):
    init = state.create_train_state(model, run.tx, config, mesh, run.shardings)
    before = evaluation.evaluate(model, init.params, config, prepared, mesh, eval_step)['eval_bpb']
  _, trained = restore.restore_params(workdir)
  with sharding.activate(mesh):
    after = evaluation.evaluate(model, trained, config, prepared, mesh, eval_step)['eval_bpb']
  assert after < before - 1.0, (before, after)
  # A run saved before train.ema_rate existed (no field in config.json, no
  # ema_params in the checkpoint) still restores, without an EMA.
  saved = os.path.join(workdir, 'config.json')
  old = json.loads(open(saved).read())
  del old['train']['ema_rate']
  with open(saved, 'w') as f:
    json.dump(old, f)
  loaded = restore.load_for_inference(workdir)
  assert loaded.config.train.ema_rate == 0.0
  for x, y in zip(jax.tree.leaves(trained), jax.tree.leaves(loaded.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

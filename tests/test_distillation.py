"""Distillation (SDTT over patch slots): the loss, the rounds, and the student
as an ordinary latent MDLM run (bltdiff/latent/distillation.py,
bltdiff/training/distill.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from bltdiff import commands
from bltdiff.errors import ConfigError
from bltdiff.latent import distillation
from bltdiff.models import registry
from bltdiff.training import checkpointing, distill, restore
from configs import common
from tests.conftest import tiny_latent_config

TEACHER_STEPS = 4


def distill_config(teacher: str, **overrides):
  train = common.train_config(batch_size=8, num_steps=6, learning_rate=3e-3, warmup_steps=1,
                              log_every=2, eval_every=1000, eval_batches=1, eval_t_samples=1,
                              sample_every=1000, checkpoint_every=1000, keep_checkpoints=3)
  c = common.distill_run(train=train, distill=common.distill_config(
      teacher=teacher, teacher_steps=TEACHER_STEPS, rounds=2, step_ratio=2))
  for key, value in overrides.items():
    section, field = key.split('.')
    c[section][field] = value
  return c


@pytest.fixture(scope='module')
def teacher(tmp_path_factory, corpus_glob):
  """A tiny latent MDLM trained for a few steps on the built-in corpus."""
  config = tiny_latent_config(corpus_glob, **{
      'data.source': 'builtin', 'data.builtin_max_bytes': 200_000,
      'data.doc_bytes': 4096, 'data.validation_fraction': 0.1, 'train.num_steps': 20, 'train.learning_rate': 1e-2,
      'sample.steps': TEACHER_STEPS})
  workdir = str(tmp_path_factory.mktemp('teacher') / 'run')
  commands.train(config, workdir)
  return workdir


def batch_and_model(config, rows: int = 4, seed: int = 0):
  model = registry.get_model(config)
  rng = np.random.RandomState(seed)
  tokens = rng.randint(32, 127, size=(rows, config.data.seq_len)).astype(np.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), {'tokens': tokens})
  return model, jax.tree.map(jnp.asarray, params), {'tokens': tokens}


@pytest.mark.parametrize('decoder_mode', ['ar', 'parallel'])
def test_loss_is_zero_for_the_teacher_itself_at_k_1(corpus_glob, decoder_mode):
  config = tiny_latent_config(corpus_glob, **{'model.decoder_mode': decoder_mode})
  model, params, batch = batch_and_model(config)
  key = jax.random.PRNGKey(3)
  loss = jax.jit(lambda p, q, plan: distillation.distillation_loss(model, p, q, batch, key, plan,
                                                                   train=False),
                 static_argnums=2)
  same, metrics = loss(params, params, distillation.StepPlan(TEACHER_STEPS, 1))
  assert abs(float(same)) < 1e-6 and abs(float(metrics['kl_per_slot'])) < 1e-6
  # The loss can fail: another student is not the teacher.
  _, other, _ = batch_and_model(config, seed=1)
  assert float(loss(other, params, distillation.StepPlan(TEACHER_STEPS, 1))[0]) > 1e-3
  if decoder_mode == 'ar':  # nor are two teacher calls (k = 2) its one call
    two, metrics = loss(params, params, distillation.StepPlan(TEACHER_STEPS, 2))
    assert float(two) > 1e-4 and 0.0 < float(metrics['revealed_fraction']) <= 1.0


def test_teacher_targets_follow_its_sampler(corpus_glob):
  """The last student step (t = k/T) ends at s = 0: the teacher reveals every
  masked slot, as the fixed-step sampler's last step does; each target patch
  is a draw of D (a length in 1..L, bytes only up to it)."""
  config = tiny_latent_config(corpus_glob)
  model, params, batch = batch_and_model(config)
  patches, pt = model.patchify(batch['tokens'])
  plan = distillation.StepPlan(TEACHER_STEPS, 2)
  masked = patches.slot_mask
  last = jnp.full((masked.shape[0],), plan.student_steps - 1, jnp.int32)
  target = distillation.teacher_targets(model, params, jax.random.PRNGKey(0), pt,
                                        patches.slot_mask, masked, last, plan)
  assert bool(jnp.all(target.revealed == masked))
  lengths = np.asarray(target.lengths)[np.asarray(masked)]
  assert lengths.min() >= 1 and lengths.max() <= config.patching.max_patch_len
  first = jnp.zeros_like(last)  # at t = 1 with T = 4, k = 2 some slots stay masked
  target = distillation.teacher_targets(model, params, jax.random.PRNGKey(0), pt,
                                        patches.slot_mask, masked, first, plan)
  assert 0 < int(jnp.sum(target.revealed)) < int(jnp.sum(masked))


def round_params(directory):
  _, params = restore.restore_params(directory)
  return jax.tree.map(np.asarray, params)


def test_a_round_resumes_bit_exactly_and_the_student_is_an_ordinary_run(teacher, tmp_path):
  one = distill_config(teacher, **{'distill.rounds': 1})
  straight = str(tmp_path / 'straight')
  assert commands.distill(one, straight) == [distill.round_dir(straight, 1)]
  # Interrupted mid-round, then resumed by the same command.
  interrupted = str(tmp_path / 'interrupted')
  first = distill.round_dir(interrupted, 1)
  assert commands.distill(one, interrupted, stop_at_step=3) == []
  assert os.listdir(checkpointing.checkpoint_dir(first)) == ['3']
  assert commands.distill(one, interrupted) == [first]
  a, b = round_params(distill.round_dir(straight, 1)), round_params(first)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The student moved away from its teacher, which it started from.
  assert any(not np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(round_params(teacher)), jax.tree.leaves(b)))
  # Across rounds: a rerun with two rounds keeps the finished round 1 as it is
  # and distils round 2 from it.
  second = distill.round_dir(interrupted, 2)
  assert commands.distill(distill_config(teacher), interrupted) == [first, second]
  for x, y in zip(jax.tree.leaves(b), jax.tree.leaves(round_params(first))):
    np.testing.assert_array_equal(x, y)
  saved = checkpointing.load_config(second)
  assert saved.distill.teacher == os.path.abspath(first)
  # Round 2's student is an ordinary latent MDLM run sampling with T / k^2 steps:
  # --mode=sample works on its directory.
  assert saved.model.kind == 'latent_mdlm' and saved.sample.steps == TEACHER_STEPS // 4
  from bltdiff import generate
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(num_samples=2, seed=0, output=str(tmp_path / 'sample' / 'out')):
    tokens, stats = generate.run_sample_command(second)
  assert tokens.shape[0] == 2 and stats['steps'] == TEACHER_STEPS // 4
  assert os.path.exists(str(tmp_path / 'sample' / 'out.txt'))
  # A rerun with another teacher step count does not resume into these rounds.
  with pytest.raises(ConfigError, match='distill.teacher_steps'):
    commands.distill(distill_config(teacher, **{'distill.teacher_steps': 8}), interrupted)


def test_a_round_on_the_builtin_corpus_lowers_the_loss(teacher, tmp_path):
  """The round's own evals of the objective (metrics.jsonl): at step 0, the
  student is its teacher; at the end, on the same validation batches and keys."""
  config = distill_config(teacher, **{'distill.rounds': 1, 'train.num_steps': 30,
                                    'train.learning_rate': 3e-4, 'train.eval_batches': 8})
  workdir = str(tmp_path / 'distill')
  commands.distill(config, workdir)
  with open(os.path.join(distill.round_dir(workdir, 1), 'metrics.jsonl')) as f:
    evals = [m for m in map(json.loads, f) if 'eval_objective_loss' in m]
  assert [m['step'] for m in evals] == [0, 30]
  before, after = evals[0]['eval_objective_loss'], evals[-1]['eval_objective_loss']
  assert after < 0.8 * before, (before, after)


def test_config_errors_are_one_line(teacher, tmp_path):
  from bltdiff import config_checks
  with pytest.raises(ConfigError, match='distill.teacher: give'):
    config_checks.validate_distill(distill_config(''))
  with pytest.raises(ConfigError, match='distill.rounds'):
    config_checks.validate_distill(distill_config(teacher, **{'distill.rounds': 3}))
  with pytest.raises(ConfigError, match='distill.teacher: no trained run'):
    commands.distill(distill_config(str(tmp_path / 'nothing')), str(tmp_path / 'out'))

"""bltdiff/latent/train_objective.py: model.slot_weighting 'slot' trains on a
reweighted objective (every masked slot weighing the same) and leaves the
reported bound alone; model.masking 'count' estimates the same bound as the
t draw, with less variance."""

import glob

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import config_checks
from bltdiff.errors import ConfigError
from bltdiff.latent import train_objective
from bltdiff.latent.diffusion import mask_slots
from bltdiff.training import checkpointing
from bltdiff.models import registry
from conftest import tiny_latent_config


def losses(config, tokens, train):
  model = registry.get_model(config)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': tokens})
  loss = jax.jit(lambda p, k: model.loss(p, {'tokens': tokens}, k, train=train))
  return loss(params, jax.random.PRNGKey(1))


def rows(corpus_glob, n=4, length=32):
  text = b' '.join(open(f, 'rb').read() for f in sorted(glob.glob(corpus_glob))[:2])
  return np.frombuffer(text[:n * length], np.uint8).astype(np.int32).reshape(n, length)


@pytest.mark.parametrize('mode, lengths_vary', [('static', False), ('space', True)])
def test_slot_weighting_changes_the_objective_not_the_bound(corpus_glob, mode, lengths_vary):
  tokens = rows(corpus_glob)
  by = {w: tiny_latent_config(corpus_glob, **{'model.slot_weighting': w, 'patching.mode': mode})
        for w in ('byte', 'slot')}
  for train in (True, False):
    (byte_loss, byte_m), (slot_loss, slot_m) = (losses(by[w], tokens, train) for w in by)
    # The reported bound is the same computation under both weightings.
    np.testing.assert_allclose(float(slot_m['bpb']), float(byte_m['bpb']), rtol=1e-6)
    np.testing.assert_allclose(float(byte_loss), float(byte_m['bpb']) * np.log(2), rtol=1e-6)
    if train and lengths_vary:  # reweighted: another objective
      assert abs(float(slot_loss) - float(byte_loss)) > 1e-4 * float(byte_loss)
    else:  # equal lengths (s_i = s̄), or evaluation: the bound itself
      np.testing.assert_allclose(float(slot_loss), float(byte_loss), rtol=1e-5)


def test_unknown_choices_are_one_line_errors(corpus_glob):
  config = tiny_latent_config(corpus_glob, **{'model.slot_weighting': 'token'})
  with pytest.raises(ConfigError, match=r"model.slot_weighting: expected one of \('byte', 'slot'\)"):
    config_checks.validate(config)
  config = tiny_latent_config(corpus_glob, **{'model.masking': 'fixed'})
  with pytest.raises(ConfigError, match=r"model.masking: expected one of \('independent', 'count'\)"):
    config_checks.validate(config)


def test_count_masking_masks_k_real_slots_with_weight_f_over_k():
  slot_mask = jnp.asarray(np.arange(12)[None, :] < np.array([[12], [5], [1], [0]] * 4)[:, 0:1])
  masked, weight = train_objective.count_masked(jax.random.PRNGKey(0), slot_mask)
  masked, weight, slot_mask = map(np.asarray, (masked, weight, slot_mask))
  filled, k = slot_mask.sum(-1), masked.sum(-1)
  assert not (masked & ~slot_mask).any()
  assert np.all((k >= 1) == (filled > 0)) and np.all(k <= filled)
  np.testing.assert_allclose(weight[filled > 0], filled[filled > 0] / k[filled > 0], rtol=1e-6)
  assert np.all(weight[filled == 0] == 0)


def test_count_masking_estimates_the_same_bound_with_less_variance():
  """A synthetic ℓ_i(S) = c_i · (1 + |S|), whose term 1 is known exactly:
  Σ_k (1/k) E_{|S|=k}[Σ_{i∈S} ℓ_i(S)] = (Σc / F) Σ_{k=1..F} (1 + k). Both draws,
  many batches of 16 rows: the same mean (within 4 standard errors of the exact
  value), the count draw's per-row spread smaller."""
  F, rows, draws = 10, 16, 400
  c = jnp.linspace(0.5, 2.0, F)
  slot_mask = jnp.ones((rows, F), bool)
  exact = float(jnp.sum(c)) / F * sum(1 + k for k in range(1, F + 1))

  def term(masked, weight):
    return weight * jnp.sum(jnp.where(masked, c * (1 + jnp.sum(masked, -1, keepdims=True)), 0.0),
                            axis=-1)

  def count_draw(key):
    return term(*train_objective.count_masked(key, slot_mask))

  def t_draw(key):  # the 'independent' draw at evaluation: t in (0, 1], w = 1/t
    t_key, mask_key = jax.random.split(key)
    t = 1.0 - jnp.mod(jax.random.uniform(t_key, ()) + jnp.arange(rows) / rows, 1.0)
    return term(mask_slots(mask_key, slot_mask, 1.0 - t), 1.0 / t)

  keys = jax.random.split(jax.random.PRNGKey(0), draws)
  for draw in (count_draw, t_draw):
    means = np.asarray(jax.vmap(draw)(keys)).mean(-1)  # one estimate per batch
    assert abs(means.mean() - exact) < 4 * means.std() / np.sqrt(draws), (draw, means.mean())
  count_rows = np.asarray(jax.vmap(count_draw)(keys)).ravel()
  t_rows = np.asarray(jax.vmap(t_draw)(keys)).ravel()
  assert count_rows.std() < t_rows.std(), (count_rows.std(), t_rows.std())


def test_count_masking_trains_on_the_bound(corpus_glob):
  """With model.masking 'count' the training loss is the bound's estimate (its
  bpb metric is the loss), and evaluation keeps the t draw."""
  tokens = rows(corpus_glob)
  config = tiny_latent_config(corpus_glob, **{'model.masking': 'count', 'patching.mode': 'space'})
  loss, metrics = losses(config, tokens, True)
  np.testing.assert_allclose(float(loss), float(metrics['bpb']) * np.log(2), rtol=1e-6)
  independent = tiny_latent_config(corpus_glob, **{'patching.mode': 'space'})
  for train, differs in ((True, True), (False, False)):
    a, b = losses(config, tokens, train)[0], losses(independent, tokens, train)[0]
    assert (abs(float(a) - float(b)) > 1e-6) == differs


def test_a_run_saved_before_these_fields_resumes_with_either_choice(corpus_glob, tmp_path):
  """Training choices, not shapes: a run whose config.json predates them (or
  chose otherwise) resumes under any value."""
  old = tiny_latent_config(corpus_glob)
  with old.unlocked():
    del old.model['slot_weighting'], old.model['masking']
  checkpointing.save_config(old, str(tmp_path))
  for overrides in ({}, {'model.masking': 'count', 'model.slot_weighting': 'slot'}):
    checkpointing.check_resumable(tiny_latent_config(corpus_glob, **overrides), str(tmp_path))
  with pytest.raises(ConfigError, match='model.dim'):  # a shape still stops it
    checkpointing.check_resumable(tiny_latent_config(corpus_glob, **{'model.dim': 64}),
                                  str(tmp_path))


def test_visible_weight_adds_the_visible_patches_nll_and_leaves_the_bound(corpus_glob):
  """model.visible_weight λ: the training loss is the bound plus λ times the
  decoder's NLL per symbol of the visible patches, computed here from the
  model's own calls with the same key (so the same t and masked set);
  evaluation and the reported bound are unchanged."""
  from bltdiff.latent import diffusion
  tokens = rows(corpus_glob)
  off = tiny_latent_config(corpus_glob, **{'patching.mode': 'space'})
  on = tiny_latent_config(corpus_glob, **{'patching.mode': 'space', 'model.visible_weight': 0.5})
  config_checks.validate(on)
  (off_loss, off_m), (on_loss, on_m) = losses(off, tokens, True), losses(on, tokens, True)
  np.testing.assert_allclose(float(on_m['bpb']), float(off_m['bpb']), rtol=1e-6)
  model = registry.get_model(on)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': tokens})
  key = jax.random.PRNGKey(1)  # losses()'s key: rebuild its t and masked set
  patches, pt = diffusion.patchify(jnp.asarray(tokens), None, model.patch_config)
  t_key, mask_key, _ = jax.random.split(key, 3)
  t = diffusion.antithetic_times(t_key, tokens.shape[0], diffusion.TRAIN_T_MIN)
  masked = mask_slots(mask_key, patches.slot_mask, model.schedule.alpha(t))
  lp, _, _ = model.slot_log_probs(params, pt, patches.lengths, patches.slot_mask, masked)
  visible = patches.slot_mask & ~masked
  assert bool(jnp.any(visible))
  symbols = jnp.sum(jnp.where(visible, patches.lengths + 1, 0))
  expected = float(-jnp.sum(jnp.where(visible, lp, 0.0)) / symbols)
  np.testing.assert_allclose(float(on_loss) - float(off_loss), 0.5 * expected, rtol=1e-4)
  (eval_off, _), (eval_on, _) = losses(off, tokens, False), losses(on, tokens, False)
  np.testing.assert_allclose(float(eval_on), float(eval_off), rtol=1e-6)  # the bound alone


def test_visible_weight_errors(corpus_glob):
  config = tiny_latent_config(corpus_glob, **{'model.visible_weight': -1.0})
  with pytest.raises(ConfigError, match=r'model.visible_weight: expected a number >= 0'):
    config_checks.validate(config)

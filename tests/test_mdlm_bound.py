"""The MDLM NELBO on a toy distribution whose exact NLL can be enumerated."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import vocab
from bltdiff.models import byte_mdlm
from bltdiff.schedules import Schedule

ALPHABET = 3
LENGTH = 4


def toy_distribution(seed=0):
  """All ALPHABET**LENGTH sequences [K, LENGTH] and a random p over them [K]."""
  seqs = np.array(list(itertools.product(range(ALPHABET), repeat=LENGTH)), np.int32)
  logits = np.random.RandomState(seed).randn(len(seqs)) * 1.5
  p = np.exp(logits) / np.exp(logits).sum()
  return jnp.asarray(seqs), jnp.asarray(p, jnp.float32)


def exact_posterior(seqs, p, noise: float = 0.0):
  """log p(x_i | visible units of z) by enumeration, mixed with `noise` of uniform.

  Returns log_probs_fn(z [B, LENGTH]) -> [B, LENGTH, NUM_DATA_SYMBOLS]."""

  def log_probs_fn(z):
    visible = z != vocab.MASK
    consistent = jnp.all(~visible[:, None, :] | (seqs[None] == z[:, None, :]), axis=-1)  # [B, K]
    weights = consistent * p[None]  # [B, K]
    onehot = jax.nn.one_hot(seqs, ALPHABET)  # [K, L, A]
    marg = jnp.einsum('bk,kla->bla', weights, onehot)
    marg = marg / marg.sum(-1, keepdims=True)
    marg = (1 - noise) * marg + noise / ALPHABET
    out = jnp.full(z.shape + (vocab.NUM_DATA_SYMBOLS,), -jnp.inf)
    return out.at[..., :ALPHABET].set(jnp.log(marg))

  return log_probs_fn


def expected_bound(log_probs_fn, seqs, p, schedule, draws=400, seed=0):
  """E_{x~p}[NELBO(x)] in nats: exact over x, Monte Carlo over t and masks.
  Returns (mean, standard error)."""
  batch = jnp.repeat(seqs, draws, axis=0)  # every x, `draws` times
  per_seq = byte_mdlm.nelbo(log_probs_fn, batch, jax.random.PRNGKey(seed), schedule)
  per_x = per_seq.reshape(len(seqs), draws)
  mean = jnp.sum(p * per_x.mean(1))
  # Variance of the p-weighted mean of per-x Monte Carlo means.
  stderr = jnp.sqrt(jnp.sum(p ** 2 * per_x.var(1) / draws))
  return float(mean), float(stderr)


@pytest.mark.parametrize('schedule', ['loglinear', 'linear', 'cosine'])
def test_bound_equals_exact_nll_with_exact_posterior(schedule):
  seqs, p = toy_distribution()
  exact_nll = float(-jnp.sum(p * jnp.log(p)))
  bound, stderr = expected_bound(exact_posterior(seqs, p), seqs, p, Schedule(schedule))
  assert abs(bound - exact_nll) < 4 * stderr + 1e-3, (bound, exact_nll, stderr)


def test_bound_exceeds_exact_nll_with_imperfect_denoiser():
  seqs, p = toy_distribution()
  exact_nll = float(-jnp.sum(p * jnp.log(p)))
  schedule = Schedule('loglinear')
  noisy, _ = expected_bound(exact_posterior(seqs, p, noise=0.3), seqs, p, schedule)
  assert noisy > exact_nll
  # Paired with the exact denoiser (same t and masks), the gap is significant:
  # the 1/t weight makes each bound noisy, but their difference much less so.
  draws = 400
  batch = jnp.repeat(seqs, draws, axis=0)
  key = jax.random.PRNGKey(1)
  gap = (byte_mdlm.nelbo(exact_posterior(seqs, p, noise=0.3), batch, key, schedule)
         - byte_mdlm.nelbo(exact_posterior(seqs, p), batch, key, schedule))
  gap = gap.reshape(len(seqs), draws)
  mean = float(jnp.sum(p * gap.mean(1)))
  stderr = float(jnp.sqrt(jnp.sum(p ** 2 * gap.var(1) / draws)))
  assert mean > 4 * stderr, (mean, stderr)


def test_visible_units_cost_nothing():
  """SUBS carries visible bytes over, so a visible unit's log-prob is exactly 0."""
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, vocab.NUM_DATA_SYMBOLS))
  z = jnp.array([[1, vocab.MASK, 3, vocab.MASK, 256], [vocab.MASK] * 5])
  lp = byte_mdlm.subs_log_probs(logits, z)
  assert float(lp[0, 0, 1]) == 0.0 and float(lp[0, 4, 256]) == 0.0
  assert np.allclose(jax.nn.logsumexp(lp, -1), 0.0, atol=1e-5)
  assert lp.shape[-1] == vocab.NUM_DATA_SYMBOLS  # MASK is never a prediction


def test_integrand_at_fixed_times_integrates_to_the_exact_nll():
  """bench/bound_by_t.py's decomposition: the bound is ∫_0^1 f(t) dt with f(t) the
  1/t-weighted masked NLL at a fixed t; with the exact posterior the
  midpoint rule over fixed times recovers the exact NLL."""
  seqs, p = toy_distribution()
  exact_nll = float(-jnp.sum(p * jnp.log(p)))
  schedule, draws, bins = Schedule('loglinear'), 200, 20
  batch = jnp.repeat(seqs, draws, axis=0)
  means, variances = [], []
  for i in range(bins):
    t = jnp.full((batch.shape[0],), (i + 0.5) / bins)
    per_x = byte_mdlm.nelbo(exact_posterior(seqs, p), batch, jax.random.PRNGKey(i), schedule,
                            t=t).reshape(len(seqs), draws)
    means.append(jnp.sum(p * per_x.mean(1)))
    variances.append(jnp.sum(p ** 2 * per_x.var(1) / draws))
  integral = float(sum(means)) / bins
  stderr = float(jnp.sqrt(sum(variances))) / bins
  assert abs(integral - exact_nll) < 4 * stderr + 0.01, (integral, exact_nll, stderr)


def test_byte_mdlm_loss_at_a_fixed_time():
  """ByteMDLM.loss(t=1): every byte masked, weight 1: the mean NLL of each byte
  given nothing, in nats per byte."""
  from configs import common
  model = byte_mdlm.ByteMDLM(common.byte_model('byte_mdlm', dim=32, num_layers=1, num_heads=2,
                                               mlp_dim=64))
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 8), 0, 256)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), {'tokens': tokens})
  loss, _ = model.loss(params, {'tokens': tokens}, jax.random.PRNGKey(2), False,
                       t=jnp.ones((2,)))
  lp = model.log_probs(params, jnp.full_like(tokens, vocab.MASK))
  expected = -jnp.mean(jnp.take_along_axis(lp, tokens[..., None], axis=-1))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)

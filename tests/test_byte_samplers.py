"""Byte MDLM samplers and the generic loops: masks, prompts, cached == uncached
with fewer calls, marginals, adaptive step counts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import vocab
from bltdiff.errors import ConfigError
from bltdiff.models import byte_mdlm
from bltdiff.sampling import categorical, loops, registry
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule
from configs import common

CONFIG = common.byte_model('byte_mdlm', dim=32, num_layers=1, num_heads=2, mlp_dim=64)


@pytest.fixture(scope='module')
def model_and_params():
  model = byte_mdlm.ByteMDLM(CONFIG)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, 24), jnp.int32)})
  return model, params


@dataclasses.dataclass(frozen=True)
class FixedDistribution(byte_mdlm.ByteAdapter):
  """Byte MDLM's adapter with a network that always predicts log_probs
  [b, n, V]; `on_commit` sees every new state (to record the history)."""
  log_probs: jax.Array = None
  on_commit: object = None

  @property
  def schedule(self):
    return Schedule('loglinear')

  def predict(self, z):
    return self.log_probs

  def commit(self, z, proposal, unmask):
    new = super().commit(z, proposal, unmask)
    if self.on_commit is not None:
      jax.debug.callback(self.on_commit, new)
    return new


def fixed(log_probs, on_commit=None):
  return FixedDistribution(model=None, params=None, top_p=1.0, log_probs=log_probs,
                           on_commit=on_commit)


def test_no_mask_left_and_prompt_kept(model_and_params):
  model, params = model_and_params
  prefix = np.frombuffer(b'Hello', np.uint8).astype(np.int32)
  for sampler in model.samplers:
    tokens, stats = model.sample(params, jax.random.PRNGKey(1),
                                 SamplerOptions(sampler=sampler, steps=10), num_samples=3,
                                 length=24, prefix=prefix)
    assert tokens.shape == (3, 24)
    assert not (tokens == vocab.MASK).any()
    assert ((tokens >= 0) & (tokens < vocab.NUM_DATA_SYMBOLS)).all()
    assert (tokens[:, :5] == prefix).all()


def test_cached_equals_uncached_with_fewer_calls(model_and_params):
  model, params = model_and_params
  # Many more steps than positions: most steps reveal nothing and need no call.
  kwargs = dict(num_samples=2, length=24)
  cached, cstats = model.sample(params, jax.random.PRNGKey(3),
                                SamplerOptions(sampler='cached', steps=100), **kwargs)
  plain, pstats = model.sample(params, jax.random.PRNGKey(3),
                               SamplerOptions(sampler='ancestral', steps=100), **kwargs)
  np.testing.assert_array_equal(cached, plain)
  assert pstats['latent_calls'] == 100
  assert cstats['latent_calls'] < pstats['latent_calls']


def test_sampler_never_changes_visible_units():
  """Run the generic loop step by step via a recording commit: a unit, once
  visible, keeps its value to the end."""
  length, steps = 16, 12
  history = []
  lp = jnp.log(jnp.full((2, length, vocab.NUM_DATA_SYMBOLS), 1.0 / vocab.NUM_DATA_SYMBOLS))
  adapter = fixed(lp, on_commit=lambda a: history.append(np.asarray(a)))

  def run(key):
    return loops.sample_masked(key, jnp.full((2, length), vocab.MASK, jnp.int32), adapter,
                               num_steps=steps, cached=False)

  final, _ = categorical.run_with_x64(jax.jit(run), jax.random.PRNGKey(0))
  assert len(history) == steps
  for before, after in zip(history, history[1:]):
    visible = before != vocab.MASK
    np.testing.assert_array_equal(after[visible], before[visible])
  assert not (np.asarray(final) == vocab.MASK).any()


def test_gumbel_noise_is_float64_under_x64():
  def draw(key):
    return categorical.gumbel_argmax(key, jnp.zeros((4,), jnp.float32))
  jaxpr = jax.make_jaxpr(draw)
  with jax.enable_x64(True):
    assert 'f64' in str(jaxpr(jax.random.PRNGKey(0)))


@pytest.mark.parametrize('draw', ['gumbel_argmax', 'inverse_cdf_draw'])
def test_categorical_draws_have_the_law_and_never_draw_a_zero(draw):
  """Both draws: frequencies match the probabilities (z-scores over 40000
  draws, a symbol of probability 1e-3 included), a symbol of probability 0
  never comes, float64 noise under x64, and a subset of rows drawn alone is
  those rows of the whole batch's draw."""
  probs = np.array([0.0, 0.5, 0.0, 0.299, 0.2, 0.001, 0.0])
  n = 40000
  lp = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, probs.size))
  fn = getattr(categorical, draw)
  with jax.enable_x64(True):
    x = np.asarray(jax.jit(lambda k: fn(k, lp, jnp.arange(n)))(jax.random.PRNGKey(5)))
    assert 'f64' in str(jax.make_jaxpr(lambda k: fn(k, lp[:2]))(jax.random.PRNGKey(0)))
    some = jnp.array([3, 17, 2])
    np.testing.assert_array_equal(fn(jax.random.PRNGKey(5), lp[:3], some), x[np.asarray(some)])
  counts = np.bincount(x, minlength=probs.size)
  assert np.all(counts[probs == 0] == 0)
  kept = probs > 0
  z = (counts[kept] / n - probs[kept]) / np.sqrt(probs[kept] * (1 - probs[kept]) / n)
  assert np.max(np.abs(z)) < 4.5, z


def test_top_p_keeps_the_nucleus():
  lp = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
  kept = np.isfinite(np.asarray(categorical.top_p_filter(lp, 0.7)))
  np.testing.assert_array_equal(kept, [True, True, False, False])
  kept = np.isfinite(np.asarray(categorical.top_p_filter(lp, 0.1)))
  np.testing.assert_array_equal(kept, [True, False, False, False])
  np.testing.assert_allclose(categorical.top_p_filter(lp, 1.0), lp)


def test_ancestral_marginals_match_a_known_distribution():
  """With a fixed per-position distribution, samples match it (chi-square)."""
  probs = np.array([0.6, 0.25, 0.1, 0.05])
  lp = jnp.full((400, 8, vocab.NUM_DATA_SYMBOLS), -jnp.inf).at[..., :4].set(jnp.log(probs))

  def run(key):
    return loops.sample_masked(key, jnp.full((400, 8), vocab.MASK, jnp.int32),
                               fixed(lp), num_steps=5)[0]

  tokens = np.asarray(categorical.run_with_x64(jax.jit(run), jax.random.PRNGKey(0)))
  counts = np.bincount(tokens.ravel(), minlength=4)[:4]
  expected = probs * tokens.size
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  assert chi2 < 16.27, (counts, expected)  # 3 dof, p = 0.001


def toy_adaptive_steps(probs, alpha=0.1, min_steps=2, max_steps=64, units=32):
  """Steps the entropy-adaptive sampler takes when every unit has the
  distribution `probs` (fixed, so its entropy is known)."""
  lp = jnp.full((1, units, vocab.NUM_DATA_SYMBOLS), -jnp.inf).at[..., :len(probs)].set(
      jnp.log(jnp.asarray(probs)))
  options = SamplerOptions(sampler='adaptive', adaptive_alpha=alpha, min_steps=min_steps,
                           steps=max_steps)

  def run(key):
    return registry.run(fixed(lp), key, jnp.full((1, units), vocab.MASK, jnp.int32), options)

  tokens, stats = categorical.run_with_x64(jax.jit(run), jax.random.PRNGKey(0))
  assert not (np.asarray(tokens) == vocab.MASK).any()
  return int(stats.steps)


def test_adaptive_takes_the_planned_steps():
  """T = clip(ceil(alpha * H), min, max) with H the summed entropy of the units."""
  easy_h = -sum(p * np.log(p) for p in [0.97, 0.01, 0.01, 0.01]) * 32  # ~5.4 nats
  hard_h = np.log(16) * 32  # ~88.7 nats
  assert toy_adaptive_steps([0.97, 0.01, 0.01, 0.01]) == max(2, int(np.ceil(0.1 * easy_h)))
  assert toy_adaptive_steps([1 / 16] * 16) == int(np.ceil(0.1 * hard_h))
  assert toy_adaptive_steps([1 / 16] * 16, alpha=10.0) == 32  # capped: one unit per step


def test_adaptive_and_confidence_respect_prompt_and_suffix(model_and_params):
  model, params = model_and_params
  prefix, suffix = np.array([1, 2, 3], np.int32), np.array([4, 5], np.int32)
  for options in [SamplerOptions(sampler='adaptive', steps=10, adaptive_alpha=0.2),
                  SamplerOptions(sampler='confidence', steps=10, confidence_threshold=0.5)]:
    tokens, stats = model.sample(params, jax.random.PRNGKey(2), options, num_samples=2,
                                 length=24, prefix=prefix, suffix=suffix)
    assert not (tokens == vocab.MASK).any()
    assert (tokens[:, :3] == prefix).all() and (tokens[:, -2:] == suffix).all()
    assert 1 <= stats['steps'] <= 10 and stats['latent_calls'] == stats['steps']


def test_prompt_without_room_is_a_clear_error(model_and_params):
  model, params = model_and_params
  with pytest.raises(ConfigError, match='^prompt:'):
    model.sample(params, jax.random.PRNGKey(0), SamplerOptions(steps=2), num_samples=1,
                 length=4, prefix=np.arange(4))


def test_sampler_options_are_checked_with_the_field_name():
  with pytest.raises(ConfigError, match='^--steps:'):
    SamplerOptions(steps=0).check(where='--')
  with pytest.raises(ConfigError, match='^sample.top_p:'):
    SamplerOptions(top_p=0.0).check()
  with pytest.raises(ConfigError, match='^sample.min_steps:'):
    SamplerOptions(steps=4, min_steps=5).check()

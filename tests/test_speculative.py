"""Self-speculative intra-patch decoding (bltdiff/latent/speculative.py): the
acceptance test's law, an exact draw of a known left-to-right chain in fewer
passes than it has symbols, its limits and its cost accounting."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import config_checks, sampling_cost, vocab
from bltdiff.errors import ConfigError
from bltdiff.latent import intra_patch, speculative
from bltdiff.latent.diffusion_decoder import diffusion_lengths
from bltdiff.latent.local_decoder import DEC_VOCAB
from bltdiff.sampling.options import SamplerOptions
from test_diffusion_decoder import conditions, model_and_params

A, B, END = ord('a'), ord('b'), vocab.END_OF_PATCH
SYMBOLS = (A, B, END)
L = 4


def log_probs_on(weights):
  """[..., 3] probabilities of a, b, END -> log-probs [..., DEC_VOCAB]."""
  weights = jnp.asarray(weights, jnp.float32)
  out = jnp.full(weights.shape[:-1] + (DEC_VOCAB,), -jnp.inf)
  return out.at[..., jnp.array(SYMBOLS)].set(jnp.log(weights))


def test_accept_and_residual_have_the_checked_law():
  """Draft x ~ q, kept with probability min(1, p(x)/q(x)), else redrawn from
  the residual: the result is distributed as p (for any q covering p)."""
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(5), size=3)
  q = rng.dirichlet(np.ones(5), size=3)
  lp, lq = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q))
  uniform = (np.arange(100) + 0.5) / 100  # a grid: acceptance as a fraction of (0, 1)
  law = np.zeros_like(p)
  for x in range(5):
    drafts = jnp.full((3, 1), x)
    kept = np.mean([np.asarray(speculative.accepted(lp[:, None], lq[:, None], drafts,
                                                    jnp.full((3, 1), u)))[:, 0]
                    for u in uniform], axis=0)
    np.testing.assert_allclose(kept, np.minimum(1.0, p[:, x] / q[:, x]), atol=0.011)
    law[:, x] += q[:, x] * np.minimum(1.0, p[:, x] / q[:, x])
  law += (1.0 - law.sum(-1, keepdims=True)) * np.exp(np.asarray(speculative.residual(lp, lq)))
  np.testing.assert_allclose(law, p, atol=1e-6)


# A known left-to-right chain over a, b and the end: y_0 ∈ {a, b}; then each
# symbol given the one before it and its position; after an end, only ends.
CHAIN = np.random.default_rng(3).dirichlet(0.4 * np.ones(3), size=(L, 2))  # [j, prev a/b, 3]
FIRST = np.array([0.7, 0.3, 0.0])


def chain_log_probs(z):
  """z [k, L] -> log p(y_j | z_<j) [k, L, DEC_VOCAB] of the toy chain."""
  k = z.shape[0]
  prev_b = (z[:, :-1] == B).astype(jnp.int32)  # [k, L-1]
  later = jnp.asarray(CHAIN)[jnp.arange(1, L)[None, :], prev_b]  # [k, L-1, 3]
  weights = jnp.concatenate([jnp.broadcast_to(jnp.asarray(FIRST), (k, 1, 3)), later], axis=1)
  ended = jnp.cumsum(z == END, axis=1) - (z == END) > 0  # an end before position j
  weights = jnp.where(ended[..., None], jnp.array([0.0, 0.0, 1.0]), weights)
  return log_probs_on(weights)


def chain_law():
  """{patch symbols up to and including its end (or all L): probability}."""
  law = {}

  def extend(prefix, prob):
    j = len(prefix)
    if j == L or (prefix and prefix[-1] == END):
      law[tuple(prefix)] = prob
      return
    weights = FIRST if j == 0 else CHAIN[j, int(prefix[-1] == B)]
    for symbol, weight in zip(SYMBOLS, weights):
      if weight > 0:
        extend(prefix + [symbol], prob * weight)

  extend([], 1.0)
  return law


def patches_of(z):
  lengths = np.asarray(diffusion_lengths(z))
  z = np.asarray(z)
  return [tuple(row[:min(n + 1, L)]) for row, n in zip(z, lengths)], lengths


def chain_check(z, index):
  """The chain as a check pass on some buffer rows (it needs no condition)."""
  return chain_log_probs(z)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_speculative_draws_the_chain_exactly_in_fewer_passes(seed):
  """Drafts from a first pass that knows nothing beyond position 0 (uniform
  over a, b, end), checked by the chain: the patches follow the chain's law
  (z-scores over every patch), every row takes at most min(len + 1, L)
  passes and fewer on average. One pass (T = 1) is far from the law: the
  test can tell."""
  n = 20000
  first = chain_log_probs(jnp.full((1, L), A))  # position 0 exact; the rest replaced below
  first = jnp.concatenate([first[:, :1], log_probs_on(jnp.full((1, L - 1, 3), 1 / 3))], axis=1)
  first = jnp.broadcast_to(first, (n, L, DEC_VOCAB))
  law = chain_law()
  assert sum(law.values()) == pytest.approx(1.0)

  def z_scores(z):
    counts = collections.Counter(patches_of(z)[0])
    assert set(counts) <= set(law)
    return np.array([(counts[s] / n - p) / np.sqrt(p * (1 - p) / n) for s, p in law.items()])

  draw = jax.jit(lambda steps, key: speculative.speculative_draw(first, chain_check, steps,
                                                                  key)[:2])
  key = jax.random.PRNGKey(seed)
  z, passes = draw(jnp.full((n,), L), key)
  assert np.max(np.abs(z_scores(z))) < 4.5
  _, lengths = patches_of(z)
  symbols = np.minimum(lengths + 1, L)
  assert np.all(np.asarray(passes) <= symbols) and np.all(np.asarray(passes) >= 1)
  assert np.mean(passes) < np.mean(symbols) - 0.1

  one_pass, passes = draw(jnp.ones((n,), jnp.int32), key)
  assert np.all(np.asarray(passes) == 1)
  assert np.max(np.abs(z_scores(one_pass))) > 10


def lookahead_check(z, index):
  """The chain's check pass with K = 2 lookahead blocks, each a fixed law far
  from the chain's (any law of what the query sees will do)."""
  ahead = log_probs_on(jnp.broadcast_to(jnp.array([0.1, 0.8, 0.1]), (z.shape[0], 2 * L, 3)))
  return jnp.concatenate([chain_log_probs(z), ahead], axis=1)


def test_draft_laws_take_the_lookahead_block_that_sees_the_settled_prefix():
  """After a rejection at r, position r + d drafts from block d (d = 1..K),
  every other position from the chain's block (block 0)."""
  laws = jnp.arange(3 * L, dtype=jnp.float32).reshape(1, 3 * L, 1)  # block b, position j: bL+j
  for r in range(L + 1):
    got = np.asarray(speculative.draft_laws(laws, jnp.array([r]), L))[0, :, 0]
    want = [(j - r) * L + j if 1 <= j - r <= 2 else j for j in range(L)]
    assert got.tolist() == want, r


@pytest.mark.parametrize('seed', [0, 1])
def test_lookahead_drafts_keep_the_draw_exact(seed):
  """Drafts from lookahead blocks after a rejection: still the chain's law."""
  n = 20000
  first = jnp.broadcast_to(chain_log_probs(jnp.full((1, L), A)), (n, L, DEC_VOCAB))
  z, passes, _ = jax.jit(lambda key: speculative.speculative_draw(
      first, lookahead_check, jnp.full((n,), L), key))(jax.random.PRNGKey(seed))
  law = chain_law()
  patches, lengths = patches_of(z)
  counts = collections.Counter(patches)
  assert set(counts) <= set(law)
  scores = [(counts[s] / n - p) / np.sqrt(p * (1 - p) / n) for s, p in law.items()]
  assert np.max(np.abs(scores)) < 4.5
  assert np.all(np.asarray(passes) <= np.minimum(lengths + 1, L))


def test_rows_not_planned_take_no_pass():
  first = jnp.broadcast_to(chain_log_probs(jnp.full((1, L), A)), (3, L, DEC_VOCAB))
  _, passes, rows_run = speculative.speculative_draw(first, chain_check, jnp.array([0, L, 1]),
                                                     jax.random.PRNGKey(0))
  assert np.asarray(passes)[0] == 0 and np.asarray(passes)[2] == 1
  # Only row 1 runs check passes: each on a buffer of one row (of 3: the ladder's 1, 3).
  assert int(rows_run) == int(np.asarray(passes)[1]) - 1


@pytest.mark.parametrize('previous_symbol', [False, True])
def test_the_check_pass_is_the_left_to_right_chain(previous_symbol):
  """check_pass gives at position j what the sampling pass gives for j once
  the positions before it are revealed left to right (with the previous-symbol
  input too: the check reads z_{j−1} at j, the sampling pass its revealed byte)."""
  model, params = model_and_params(two_stream=True, order_bias=2.0,
                                   previous_symbol=previous_symbol)
  cond = conditions(2, model.net.dec_dim, seed=4)
  z = jnp.array([[A, B, END], [B, B, A]], jnp.int32)
  checked = np.asarray(model.decoder.check_pass(params, cond, z))
  rank = jnp.broadcast_to(jnp.arange(3), z.shape)
  for j in range(3):
    seen = jnp.where(jnp.arange(3)[None] < j, z, vocab.MASK)
    step = np.asarray(model.decoder.denoise_patch(params, cond, seen, rank))
    np.testing.assert_allclose(checked[:, j], step[:, j], atol=1e-5)


def test_the_check_pass_lookahead_blocks_hide_the_symbols_before():
  """With model.dec_lookahead = K, the check pass's block d gives at position j
  what the sampling pass gives for j when only z_<j−d is revealed."""
  model, params = model_and_params(two_stream=True, order_bias=2.0, previous_symbol=True,
                                   lookahead=2)
  cond = conditions(2, model.net.dec_dim, seed=4)
  z = jnp.array([[A, B, END], [B, B, A]], jnp.int32)
  checked = np.asarray(model.decoder.check_pass(params, cond, z))
  assert checked.shape[1] == 3 * 3
  rank = jnp.broadcast_to(jnp.arange(3), z.shape)
  for d, j in itertools.product((0, 1, 2), range(3)):
    seen = jnp.where(jnp.arange(3)[None] < j - d, z, vocab.MASK)
    step = np.asarray(model.decoder.denoise_patch(params, cond, seen, rank))
    np.testing.assert_allclose(checked[:, d * 3 + j], step[:, j], atol=1e-5)


@pytest.mark.parametrize('alpha', [0.0, 1e9])
def test_speculative_limits_and_gathered_rows(alpha):
  """α = 0 with T_min = 1: one-pass decoding, the same draw as the reveal
  rule's single pass. α large: every row decided within len + 1 passes. A
  gathered draw (draw_revealed) gives the whole batch's rows."""
  model, params = model_and_params(two_stream=True, order_bias=2.0)
  cond = conditions(8, model.net.dec_dim, seed=5)
  key = jax.random.PRNGKey(4)
  rule = intra_patch.IntraPatchRule(alpha, 1, speculative=True)
  with jax.enable_x64(True):
    whole, lengths, _ = jax.jit(lambda k: model.decoder.draw(params, k, cond,
                                                             intra_patch=rule))(key)
    reveal = jnp.arange(8) % 2 == 0
    gathered = jax.jit(lambda k: model.decoder.draw_revealed(params, k, cond, reveal,
                                                             intra_patch=rule))(key)
    plain, _, _ = jax.jit(lambda k: model.decoder.draw(
        params, k, cond, intra_patch=intra_patch.IntraPatchRule(alpha, 1)))(key)
  np.testing.assert_array_equal(np.asarray(gathered['tokens'])[::2], np.asarray(whole)[::2])
  steps = np.asarray(gathered['steps'])
  assert np.all(steps[1::2] == 0)
  if alpha == 0.0:
    np.testing.assert_array_equal(whole, plain)
    assert np.all(steps[::2] == 1)
  else:
    assert np.all(steps[::2] <= np.minimum(np.asarray(lengths)[::2] + 1, 3))


def test_speculative_needs_a_two_stream_diffusion_decoder(make_latent_config):
  model, params = model_and_params(two_stream=False)
  cond = conditions(2, model.net.dec_dim)
  with pytest.raises(ConfigError, match='sample.intra_patch.speculative'):
    model.decoder.draw(params, jax.random.PRNGKey(0), cond,
                       intra_patch=intra_patch.IntraPatchRule(1.0, 1, speculative=True))
  config = make_latent_config()
  with config.unlocked():
    config.sample.intra_patch.speculative = True
  with pytest.raises(ConfigError, match='sample.intra_patch.speculative'):
    config_checks.validate(config)


def test_speculative_flops_count_the_check_passes():
  """The accounting counts the loop the run executed: with speculative, a
  check pass per further pass, as many as the run reports."""
  model, params = model_and_params(max_patch_len=6, two_stream=True, order_bias=2.0)
  rule = intra_patch.IntraPatchRule(1e9, 1, speculative=True)
  per_call = sampling_cost.callback_flops(model, params, 1.0, 2, 48, rule)
  assert per_call['propose_step'] > 0.2 * per_call['propose']
  options = SamplerOptions(sampler='cached', steps=6, intra_alpha=1e9, intra_speculative=True)
  _, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=2, length=48)
  assert stats['decoder_rows'] <= stats['decoder_row_passes'] <= 7 * stats['decoder_rows']
  cost = sampling_cost.run_flops(model, params, options, stats, 2, 48)
  units = 2 * model.patch_config.num_slots
  extra = (stats['decoder_row_passes'] - stats['decoder_rows']) / units
  assert cost['propose_step'] == pytest.approx(per_call['propose_step'] * extra)

"""The `diffusion` local decoder: its NELBO against exact likelihoods, the
adaptive intra-patch rule T_steps(p) = min(L, max(⌈α·Ĥ(p)⌉, T_min)) and its
two limits, training and the sampling command end to end."""

import functools
import glob
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from absl.testing import flagsaver

from bltdiff import sampling_cost, vocab
from bltdiff.errors import ConfigError
from bltdiff.latent import intra_patch, slot_gather
from bltdiff.latent.diffusion import LatentMDLM
from bltdiff.latent.diffusion_decoder import diffusion_lengths, diffusion_targets
from bltdiff.latent.patch_nelbo import block_ranks, diffusion_patch_nelbo
from bltdiff.models import byte_mdlm
from bltdiff.sampling import categorical
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule
from configs import common
from conftest import TINY_LATENT_MODEL

L = 3  # positions per patch in the enumeration tests: 3! orders, 2^3 maskings
SCHEDULE = Schedule('loglinear')  # the default: α = 1 − t, w = 1/t


@functools.lru_cache(maxsize=8)
def model_and_params(max_patch_len=L, order_bias=0.0, nelbo_draws=1, two_stream=False,
                     entropy_head=False, block_queries=False, previous_symbol=False,
                     lookahead=0):
  """A tiny latent MDLM with the `diffusion` decoder, its readout replaced by
  one that puts its mass on 'a', 'b' and the end (logits of about ±12, the
  other symbols 0): predictions that depend strongly on what is visible, and
  patches of several lengths."""
  model = LatentMDLM(common.latent_model(**dict(TINY_LATENT_MODEL, decoder_mode='diffusion',
                                                dec_order_bias=order_bias,
                                                dec_nelbo_draws=nelbo_draws,
                                                dec_two_stream=two_stream,
                                                dec_entropy_head=entropy_head,
                                                dec_block_queries=block_queries,
                                                dec_previous_symbol=previous_symbol,
                                                dec_lookahead=lookahead)),
                     common.patching_config(mode='space', max_patch_len=max_patch_len,
                                            num_slots=12))
  params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0),
                                        {'tokens': jnp.zeros((1, 48), jnp.int32)}))
  kernel = params['decoder']['readout']['kernel']
  columns = jnp.array([ord('a'), ord('b'), vocab.END_OF_PATCH])
  strong = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (kernel.shape[0], 3))
  params['decoder']['readout']['kernel'] = jnp.zeros_like(kernel).at[:, columns].set(strong)
  return model, params


@functools.lru_cache(maxsize=8)
def denoiser(max_patch_len=L, order_bias=0.0, two_stream=False, previous_symbol=False):
  """One intra-patch pass, jitted: (cond [rows, D], z [rows, L], rank [rows, L]
  of the visible positions, or None) -> log-probs."""
  model, params = model_and_params(max_patch_len, order_bias, two_stream=two_stream,
                                   previous_symbol=previous_symbol)
  return jax.jit(lambda c, z, rank=None: model.decoder.denoise_patch(params, c, z, rank))


def conditions(rows, dim, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (rows, dim))


def masked_as(y, hidden):
  """y [L] with the positions in `hidden` replaced by MASK."""
  return np.array([vocab.MASK if j in hidden else s for j, s in enumerate(y)], np.int32)


def exact_nelbo(cond_nll, n):
  """The continuous-time NELBO with α = 1 − t, by enumerating maskings:
  E_t[(1/t) Σ_S t^|S| (1−t)^(n−|S|) Σ_{j∈S} c_j(S)] = Σ_S B(|S|, n−|S|+1) Σ_{j∈S} c_j(S),
  cond_nll(S) -> {j: −log p(y_j | y with S hidden)}."""
  total = 0.0
  for k in range(1, n + 1):
    beta = math.factorial(k - 1) * math.factorial(n - k) / math.factorial(n)
    for hidden in itertools.combinations(range(n), k):
      total += beta * sum(cond_nll(set(hidden)).values())
  return total


def order_probability(order, order_bias):
  """Plackett–Luce probability of a reveal order, weights exp(−β·j)."""
  weights = np.exp(-order_bias * np.arange(len(order)))
  p = 1.0
  for k, j in enumerate(order):
    p *= weights[j] / weights[list(order[k:])].sum()
  return p


def exact_any_order_nll(cond_nll, n, order_bias=0.0):
  """−log p(y) of the reverse process that reveals one position at a time in
  a random order σ of law q (uniform for β = 0):
  −log Σ_σ q(σ) Π_k p(y_σk | y_σ<k)."""
  logs = []
  for order in itertools.permutations(range(n)):
    lp = math.log(order_probability(order, order_bias))
    for k, j in enumerate(order):
      lp -= cond_nll(set(order[k:]))[j]
    logs.append(lp)
  return -np.logaddexp.reduce(logs)


def exact_order_nelbo(cond_nll, n, order_bias):
  """The NELBO E_σ[Σ_k −log p(y_σk | y_σ<k)] by enumerating orders."""
  return sum(order_probability(order, order_bias)
             * sum(cond_nll(set(order[k:]))[j] for k, j in enumerate(order))
             for order in itertools.permutations(range(n)))


def training_estimate(model, params, cond, patch, length, seeds, rows=2048):
  """The training path's Monte Carlo estimate of one patch's bound
  (LatentMDLM.patch_log_prob) over `rows` copies of it as the slots of one
  sequence (its draws stratified over them) and `seeds` keys: (mean, stderr)."""
  cond_rows = jnp.broadcast_to(cond[None], (1, rows, cond.shape[-1]))
  tokens = jnp.asarray(np.tile(patch, (1, rows, 1)))
  lengths = jnp.full((1, rows), length, jnp.int32)
  bound_of = jax.jit(lambda k: -model.patch_log_prob(params, cond_rows, tokens, lengths, k)[0][0])
  draws = np.concatenate([np.asarray(bound_of(jax.random.PRNGKey(s))) for s in range(seeds)])
  return draws.mean(), draws.std() / math.sqrt(len(draws))


@pytest.mark.parametrize('order_bias', [0.0, 2.0])
def test_nelbo_weighting_is_tight_for_exact_conditionals(order_bias):
  """If every prediction is the exact conditional of a joint q, each order's
  product is q(y), so the NELBO equals −log q(y) whatever the order's law:
  byte MDLM's estimator and the decoder's (under its reveal order) average to it."""
  rng = np.random.RandomState(0)
  q = rng.dirichlet(np.ones(27) * 0.5).reshape(3, 3, 3)  # a joint over 3 symbols x 3 positions
  y = np.array([2, 0, 1])

  def conditional(row):  # a masked row (tuple) -> log q(y_j | visible) [3, 3]
    keep = np.ones((3, 3, 3), bool)
    for j, s in enumerate(row):
      if s != vocab.MASK:
        keep &= (np.arange(3) == s).reshape([3 if a == j else 1 for a in range(3)])
    joint = np.where(keep, q, 0.0)
    marginals = [joint.sum(axis=tuple(a for a in range(3) if a != j)) for j in range(3)]
    return np.log(np.maximum(np.stack([m / m.sum() for m in marginals]), 1e-300))

  table = {row: conditional(row) for row in itertools.product(
      *[(s, vocab.MASK) for s in y])}
  conditionals = lambda z: jnp.asarray(np.stack([table[tuple(r)] for r in np.asarray(z)]))
  rows = 4096
  x = jnp.asarray(np.tile(y, (rows, 1)))
  lengths = jnp.full((rows,), 3, jnp.int32)  # y fills the patch: no end symbol
  exact = -math.log(q[tuple(y)])
  for estimator in (
      lambda k: byte_mdlm.nelbo(conditionals, x, k, SCHEDULE),
      lambda k: diffusion_patch_nelbo(conditionals, x, lengths, k, order_bias)[0]):
    estimates = np.concatenate([np.asarray(estimator(jax.random.PRNGKey(s))) for s in range(4)])
    stderr = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * stderr + 1e-3, (estimates.mean(), exact, stderr)


@pytest.mark.parametrize('order_bias, nelbo_draws, previous_symbol',
                         [(0.0, 1, False), (1.5, 1, False), (1.5, 3, False), (1.5, 1, True)])
def test_decoder_bound_stays_above_the_exact_patch_nll(order_bias, nelbo_draws, previous_symbol):
  """A tiny decoder whose p(patch | h) is computed exactly (all 3! reveal
  orders, weighed by their law): the exact NELBO is above it, and the
  training path's Monte Carlo estimate (LatentMDLM.patch_log_prob) averages
  to the exact NELBO, with one draw per patch or the mean of several. For the
  uniform order (β = 0) the NELBO over orders is MDLM's continuous-time NELBO
  over maskings (all 2^3 of them). previous_symbol: the same with the input
  of the symbol before each position."""
  model, params = model_and_params(order_bias=order_bias, nelbo_draws=nelbo_draws,
                                   previous_symbol=previous_symbol)
  cond = conditions(1, model.net.dec_dim)
  patch = np.array([ord('a'), ord('b'), vocab.PAD], np.int32)  # 'ab': y = (a, b, END)
  y = np.asarray(diffusion_targets(patch[None], jnp.array([2])))[0]
  assert list(y) == [ord('a'), ord('b'), vocab.END_OF_PATCH]
  cache = {}

  def cond_nll(hidden):
    key = tuple(sorted(hidden))
    if key not in cache:
      z = jnp.asarray(masked_as(y, hidden))[None]
      lp = np.asarray(denoiser(L, order_bias, previous_symbol=previous_symbol)(cond, z))[0]
      cache[key] = {j: -float(lp[j, y[j]]) for j in hidden}
    return cache[key]

  nll = exact_any_order_nll(cond_nll, L, order_bias)
  bound = exact_order_nelbo(cond_nll, L, order_bias)
  if order_bias == 0.0:
    assert bound == pytest.approx(exact_nelbo(cond_nll, L), rel=1e-9)
  assert bound > nll + 1e-3, (bound, nll)  # strictly above: the conditionals disagree

  mean, stderr = training_estimate(model, params, cond, patch, 2, seeds=4)
  assert abs(mean - bound) < 4 * stderr, (mean, bound, stderr)
  assert mean > nll


def test_a_strong_order_bias_gives_the_left_to_right_chain_rule():
  """β → ∞: the order is left to right, and the estimate over rows stratified
  across the L revealed counts is exactly Σ_j −log p(y_j | y_<j), the chain
  rule the `ar` decoder's likelihood is (no variance left)."""
  model, params = model_and_params(order_bias=40.0)
  cond = conditions(1, model.net.dec_dim, seed=5)
  patch = np.array([ord('b'), vocab.PAD, vocab.PAD], np.int32)  # 'b': y = (b, END, END)
  y = np.asarray(diffusion_targets(patch[None], jnp.array([1])))[0]
  lp = [np.asarray(denoiser(L, 40.0)(cond, jnp.asarray(masked_as(y, set(range(j, L))))[None]))[0]
        for j in range(L)]
  chain = -sum(float(lp[j][j, y[j]]) for j in range(L))
  rows = 4 * L
  cond_rows = jnp.broadcast_to(cond[None], (1, rows, cond.shape[-1]))
  tokens = jnp.asarray(np.tile(patch, (1, rows, 1)))
  lengths = jnp.full((1, rows), 1, jnp.int32)
  for seed in range(3):
    bound = -model.patch_log_prob(params, cond_rows, tokens, lengths,
                                  jax.random.PRNGKey(seed))[0][0]
    assert float(jnp.mean(bound)) == pytest.approx(chain, rel=1e-4)


def permutation_ranks(order):
  """A reveal order (positions, first revealed first) -> rank [1, L] int32."""
  rank = np.empty(len(order), np.int32)
  rank[list(order)] = np.arange(len(order))
  return jnp.asarray(rank)[None]


@pytest.mark.parametrize('order_bias, previous_symbol', [(0.0, False), (1.5, False), (0.0, True)])
def test_two_streams_score_each_order_as_its_sampler_draws(order_bias, previous_symbol):
  """Two streams: the training pass (`ordered`) gives, at every position j,
  what the sampling pass gives for j once the positions ranked before it are
  revealed in that order; so −Σ_j log of it is −log of the probability that
  revealing in order σ writes y. Over all 3! orders weighed by their law, the
  NELBO is above the exact −log p_D(y), and the training path's Monte Carlo
  estimate averages to it. previous_symbol: the symbol before a position
  enters its prediction only when ranked before it, in both passes."""
  model, params = model_and_params(order_bias=order_bias, two_stream=True,
                                   previous_symbol=previous_symbol)
  cond = conditions(1, model.net.dec_dim, seed=2)
  patch = np.array([ord('a'), ord('b'), vocab.PAD], np.int32)
  y = diffusion_targets(jnp.asarray(patch)[None], jnp.array([2]))
  ordered = jax.jit(lambda c, y, r: model.net.apply(
      {'params': params}, lambda dec: dec.ordered(c, y, r), method='decoder_apply'))
  step = denoiser(L, order_bias, True, previous_symbol)
  log_q, nll = [], []
  for order in itertools.permutations(range(L)):
    rank = permutation_ranks(order)
    lp = np.asarray(ordered(cond, y, rank))[0]
    for k, j in enumerate(order):
      z = jnp.where(rank < k, y, vocab.MASK)
      np.testing.assert_allclose(np.asarray(step(cond, z, rank))[0, j], lp[j], atol=1e-5)
    log_q.append(math.log(order_probability(order, order_bias)))
    nll.append(-sum(float(lp[j, y[0, j]]) for j in range(L)))
  exact = -np.logaddexp.reduce(np.array(log_q) - np.array(nll))
  bound = float(np.dot(np.exp(log_q), nll))
  assert bound > exact + 1e-3, (bound, exact)  # strictly: the orders disagree

  mean, stderr = training_estimate(model, params, cond, patch, 2, seeds=2)
  assert abs(mean - bound) < 4 * stderr + 1e-4, (mean, bound, stderr)


@pytest.mark.parametrize('previous_symbol', [False, True])
def test_two_streams_hide_each_position_from_its_own_prediction(previous_symbol):
  """Changing y_j moves no position's prediction but those ranked after j
  (with the previous-symbol input too: a position after j reads y_j only
  when j is ranked before it)."""
  model, params = model_and_params(max_patch_len=4, two_stream=True,
                                   previous_symbol=previous_symbol)
  cond = conditions(1, model.net.dec_dim, seed=3)
  ordered = jax.jit(lambda y, r: model.net.apply(
      {'params': params}, lambda dec: dec.ordered(cond, y, r), method='decoder_apply'))
  y = jnp.array([[ord('a'), ord('b'), ord('a'), ord('b')]])
  rank = jnp.array([[2, 0, 3, 1]])
  base = np.asarray(ordered(y, rank))[0]
  for j in range(4):
    moved = np.asarray(ordered(y.at[0, j].set(ord('c')), rank))[0]
    changed = np.abs(moved - base).max(-1) > 1e-6
    assert changed.tolist() == (np.asarray(rank)[0] > int(rank[0, j])).tolist(), j



def test_block_ranks_are_what_a_t_step_draw_has_revealed():
  """Step k of T reveals ranks quota(k−1) .. quota(k) − 1: a position of rank
  r is predicted from the quota(k−1) revealed before its step."""
  for n in (3, 8):
    for steps in range(1, n + 1):
      quota = [0] + [int(intra_patch.reveal_quota(k, jnp.int32(steps), n)) for k in range(steps)]
      want = [next(quota[k] for k in range(steps) if quota[k] <= r < quota[k + 1])
              for r in range(n)]
      got = block_ranks(jnp.arange(n)[None], jnp.array([steps]))[0]
      assert np.asarray(got).tolist() == want, (n, steps)


def test_block_queries_train_the_few_step_predictions_and_leave_the_bound():
  """model.dec_block_queries: the same bound for the same key (to float
  rounding: the attention rows are longer); a gradient that differs; and the
  block queries predict what the sampler's pass predicts once the earlier
  blocks are revealed."""
  plain, params = model_and_params(max_patch_len=4, two_stream=True)
  model, _ = model_and_params(max_patch_len=4, two_stream=True, block_queries=True)
  cond = conditions(8, model.net.dec_dim, seed=7)[None]
  tokens = jnp.asarray(np.tile(np.array([ord('a'), ord('b'), ord('a'), vocab.PAD], np.int32),
                               (1, 8, 1)))
  lengths = jnp.full((1, 8), 3, jnp.int32)
  key = jax.random.PRNGKey(3)
  loss = lambda m: jax.value_and_grad(
      lambda p: -jnp.mean(m.patch_log_prob(p, cond, tokens, lengths, key)[0]))(params)
  (value, grads), (plain_value, plain_grads) = loss(model), loss(plain)
  assert float(value) == pytest.approx(float(plain_value), rel=1e-6)
  assert not np.allclose(grads['decoder']['readout']['kernel'],
                         plain_grads['decoder']['readout']['kernel'])
  y = diffusion_targets(tokens[0, :1], lengths[0, :1])
  rank = jnp.array([[1, 0, 2, 3]])
  ordered = lambda q: model.net.apply({'params': params},
                                      lambda dec: dec.ordered(cond[0, :1], y, rank, q),
                                      method='decoder_apply')
  step = denoiser(4, 0.0, True)
  for steps in (1, 2, 3):
    before = block_ranks(rank, jnp.array([steps]))
    lp = np.asarray(ordered(jnp.concatenate([rank, before], axis=1)))[0, 4:]
    for j in range(4):
      z = jnp.where(rank < before[0, j], y, vocab.MASK)
      np.testing.assert_allclose(np.asarray(step(cond[0, :1], z, rank))[0, j], lp[j], atol=1e-5)


def test_lookahead_queries_leave_the_bound_and_train_the_drafts():
  """model.dec_lookahead: the same bound for the same key (to float rounding),
  a gradient that differs (the lookahead queries' NLL trains them)."""
  plain, params = model_and_params(max_patch_len=4, two_stream=True, order_bias=8.0,
                                   previous_symbol=True)
  model, _ = model_and_params(max_patch_len=4, two_stream=True, order_bias=8.0,
                              previous_symbol=True, lookahead=2)
  cond = conditions(8, model.net.dec_dim, seed=7)[None]
  tokens = jnp.asarray(np.tile(np.array([ord('a'), ord('b'), ord('a'), vocab.PAD], np.int32),
                               (1, 8, 1)))
  lengths = jnp.full((1, 8), 3, jnp.int32)
  loss = lambda m: jax.value_and_grad(lambda p: -jnp.mean(
      m.patch_log_prob(p, cond, tokens, lengths, jax.random.PRNGKey(3))[0]))(params)
  (value, grads), (plain_value, plain_grads) = loss(model), loss(plain)
  assert float(value) == pytest.approx(float(plain_value), rel=1e-6)
  assert not np.allclose(grads['decoder']['readout']['kernel'],
                         plain_grads['decoder']['readout']['kernel'])


def test_the_entropy_head_moves_no_number_and_fits_the_nelbo():
  """With model.dec_entropy_head the bound, and its gradient for every other
  parameter, are those of the same decoder without the head (to float
  rounding); the head's own
  gradient fits Ĥ(p) to the patch's NELBO, and the step rule reads it."""
  plain, plain_params = model_and_params(two_stream=True)
  model, params = model_and_params(two_stream=True, entropy_head=True)
  head = {k: v for k, v in params['decoder'].items() if k not in plain_params['decoder']}
  assert head and set(params['decoder']) - set(head) == set(plain_params['decoder'])
  params = dict(plain_params, decoder=dict(plain_params['decoder'], **head))
  rows = 64
  cond = conditions(rows, model.net.dec_dim, seed=4)[None]
  tokens = jnp.asarray(np.tile(np.array([ord('a'), ord('b'), vocab.PAD], np.int32), (1, rows, 1)))
  lengths = jnp.full((1, rows), 2, jnp.int32)
  key = jax.random.PRNGKey(0)
  loss = lambda m: jax.jit(jax.value_and_grad(
      lambda p: -jnp.mean(m.patch_log_prob(p, cond, tokens, lengths, key)[0])))
  value, grads = loss(model)(params)
  plain_value, plain_grads = loss(plain)(plain_params)
  assert float(value) == pytest.approx(float(plain_value), rel=1e-6)  # another compiled graph
  for path, g in jax.tree_util.tree_leaves_with_path(plain_grads):
    other = grads
    for part in path:
      other = other[part.key]
    np.testing.assert_allclose(other, g, rtol=1e-4, atol=1e-7, err_msg=str(path))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(
      {k: grads['decoder'][k] for k in head}))

  # Gradient steps on the head alone bring Ĥ to the patch's mean NELBO.
  target = float(plain_value)
  predict = jax.jit(lambda p: model.decoder.entropy_estimate(p, cond[0]))
  step = jax.jit(lambda p, k: jax.grad(lambda q: -jnp.mean(
      model.patch_log_prob(q, cond, tokens, lengths, k)[0]))(p))
  before = abs(float(jnp.mean(predict(params))) - target)
  adam = optax.adam(0.02)
  state = adam.init(head)
  for i in range(150):
    g = step(params, jax.random.PRNGKey(i))
    updates, state = adam.update({k: g['decoder'][k] for k in head}, state)
    head = optax.apply_updates(head, updates)
    params = dict(params, decoder=dict(params['decoder'], **head))
  after = abs(float(jnp.mean(predict(params))) - target)
  assert after < 0.2 * before and after < 0.5, (before, after, target)
  rule = intra_patch.IntraPatchRule(0.5, 1)
  with jax.enable_x64(True):
    drawn = jax.jit(lambda k: model.decoder.draw_revealed(
        params, k, cond[0], jnp.ones(rows, bool), intra_patch=rule))(key)
  planned = np.asarray(model.decoder.intra_patch_steps(predict(params), rule))
  assert np.all(np.asarray(drawn['steps']) <= planned)


def test_the_all_masked_pass_tells_positions_apart():
  """Every hidden position carries MASK and the same latent; without its
  position embedding the first pass would predict the same at each."""
  model, params = model_and_params()
  lp = np.asarray(model.decoder.first_pass(params, conditions(2, model.net.dec_dim, seed=6)))
  assert np.abs(lp[:, 1] - lp[:, 2]).max() > 1e-2


def test_reveal_ranks_follow_the_plackett_luce_law():
  """Of positions 0 and 2, 0 comes first with probability σ(2β); β = 0 is uniform."""
  for beta in (0.0, 0.7):
    rank = np.asarray(intra_patch.reveal_ranks(
        jax.random.uniform(jax.random.PRNGKey(0), (20000, 4)), beta))
    assert sorted(rank[0].tolist()) == [0, 1, 2, 3]
    first = np.mean(rank[:, 0] < rank[:, 2])
    assert first == pytest.approx(1 / (1 + math.exp(-2 * beta)), abs=0.015)
    # the first revealed is j with probability exp(−βj) / Σ_i exp(−βi)
    weights = np.exp(-beta * np.arange(4))
    np.testing.assert_allclose(np.bincount(np.argmin(rank, -1), minlength=4) / len(rank),
                               weights / weights.sum(), atol=0.015)


def test_targets_and_lengths_round_trip():
  patches = jnp.array([[97, vocab.PAD, vocab.PAD], [97, 98, 99], [32, 33, vocab.PAD]])
  lengths = jnp.array([1, 3, 2])
  y = diffusion_targets(patches, lengths)
  assert np.asarray(y).tolist() == [[97, 258, 258], [97, 98, 99], [32, 33, 258]]
  np.testing.assert_array_equal(diffusion_lengths(y), lengths)


def test_t_steps_follow_the_formula():
  model, params = model_and_params(max_patch_len=6)
  entropy = jnp.array([0.0, 1e-6, 0.3, 1.0, 2.2, 5.0, 40.0])
  for alpha, t_min in [(0.0, 1), (0.5, 1), (1.0, 2), (2.0, 1), (3.0, 9), (math.inf, 1), (1e9, 3)]:
    got = np.asarray(model.decoder.intra_patch_steps(entropy,
                                                     intra_patch.IntraPatchRule(alpha, t_min)))
    scaled = [min(alpha * float(h), 1e6) if h > 0 else 0.0 for h in np.asarray(entropy)]
    want = [min(6, max(math.ceil(x), t_min)) for x in scaled]
    assert got.tolist() == want, (alpha, t_min, got, want)
  # In a draw: each revealed patch's steps follow its first-pass entropy, and
  # the buffer runs to their largest.
  cond = conditions(16, model.net.dec_dim, seed=1)
  reveal = jnp.arange(16) % 3 == 0
  rule = intra_patch.IntraPatchRule(0.4, 1)
  with jax.enable_x64(True):
    drawn = jax.jit(lambda k: model.decoder.draw_revealed(params, k, cond, reveal,
                                                          intra_patch=rule))(jax.random.PRNGKey(2))
  h = jax.jit(lambda c: model.decoder.entropy_estimate(params, c))(cond)
  want = np.where(np.asarray(reveal), np.asarray(model.decoder.intra_patch_steps(h, rule)), 0)
  steps = np.asarray(drawn['steps'])  # planned, or fewer when a patch is complete sooner
  assert np.all((steps <= want) & ((steps >= 1) == (want >= 1)))
  assert int(drawn['passes']) == steps.max() and len(set(want[want > 0])) > 1
  # The buffer runs its first pass whole, then each pass on the rows still decoding only,
  # in the smallest buffer of the ladder that holds them.
  buffer = int(drawn['decoded'])
  ladder = slot_gather.capacities(buffer, slot_gather.NESTED_LADDER_HALVINGS)
  running = [int(np.sum(steps > s)) for s in range(1, steps.max())]
  assert int(drawn['row_passes']) == buffer + sum(min(c for c in ladder if c >= r)
                                                   for r in running)
  assert int(drawn['row_passes']) < buffer * steps.max()


def reference_draws(model, params, key, cond, order, order_bias=0.0, two_stream=False):
  """Intra-patch decoding written out plainly: pass k reveals the positions
  with rank in order[k] (the draw's documented keys: order, then per step),
  the ranks sorting −β·j + Gumbel noise, largest first."""
  order_key, step_key = jax.random.split(key)
  rows = cond.shape[0]
  every_row = jnp.arange(rows)  # each row's noise from its own key (categorical.row_uniform)
  u = np.asarray(categorical.row_uniform(order_key, (rows, L), every_row), np.float64)
  keys = -order_bias * np.arange(L) - np.log(-np.log(u))
  rank = np.argsort(np.argsort(-keys, -1), -1)
  z = np.full((rows, L), vocab.MASK, np.int32)
  taken = np.full(rows, len(order))  # passes until every position before the first end is known
  for k, ranks in enumerate(order):
    lp = denoiser(L, order_bias, two_stream)(cond, jnp.asarray(z), jnp.asarray(rank, jnp.int32))
    drawn = np.asarray(categorical.inverse_cdf_draw(jax.random.fold_in(step_key, k), lp,
                                                    every_row))
    new = np.isin(rank, ranks)
    z = np.where(new, drawn, z)
    for r in range(rows):
      ends = [j for j in range(L) if z[r, j] == vocab.END_OF_PATCH]
      if taken[r] == len(order) and all(z[r, j] != vocab.MASK for j in range(ends[0] if ends else L)):
        taken[r] = k + 1
  lengths = np.asarray(diffusion_lengths(jnp.asarray(z)))
  return np.where(np.arange(L)[None] < lengths[:, None], z, vocab.PAD), lengths, taken


@pytest.mark.parametrize('alpha, order, order_bias, two_stream, seed', [
    (1e9, [[0], [1], [2]], 0.0, False, 0), (0.0, [[0, 1, 2]], 0.0, False, 3),
    (1e9, [[0], [1], [2]], 1.0, False, 3), (1e9, [[0], [1], [2]], 1.0, True, 3),
    (0.0, [[0, 1, 2]], 0.0, True, 5)])  # seed: latents under which several lengths are drawn
def test_the_two_limits(alpha, order, order_bias, two_stream, seed):
  """α large: one position per pass, L passes (the reverse process the NELBO
  bounds); α = 0 with T_min = 1: one pass, every position drawn from the
  all-masked prediction. Both equal a plain re-implementation for the same key
  (two streams: each pass told the order its visible positions came in)."""
  model, params = model_and_params(order_bias=order_bias, two_stream=two_stream)
  denoiser(L, order_bias, two_stream)  # built here: under x64 its init would draw other weights
  cond = conditions(8, model.net.dec_dim, seed=seed)
  key = jax.random.PRNGKey(4)
  rule = intra_patch.IntraPatchRule(alpha, 1)
  with jax.enable_x64(True):
    drawn = jax.jit(lambda k: model.decoder.draw_revealed(params, k, cond, jnp.ones(8, bool),
                                                          intra_patch=rule))(key)
    whole, whole_lengths, _ = jax.jit(lambda k: model.decoder.draw(params, k, cond,
                                                                   intra_patch=rule))(key)
    want, want_lengths, taken = reference_draws(model, params, key, cond, order, order_bias,
                                                two_stream)
  # Every pass planned runs but those after a patch is complete (the same bytes either way).
  np.testing.assert_array_equal(drawn['steps'], taken)
  assert int(drawn['passes']) == taken.max()
  for out, lengths in ((drawn['tokens'], drawn['lengths']), (whole, whole_lengths)):
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(lengths, want_lengths)
  lengths = want_lengths
  assert len(set(np.asarray(lengths))) > 1  # patches of several lengths were drawn


def test_quota_reveals_every_position_once():
  for steps in range(1, 7):
    quota = [int(intra_patch.reveal_quota(k, jnp.int32(steps), 6)) for k in range(steps)]
    increments = np.diff([0] + quota)
    assert quota[-1] == 6 and np.all(increments >= 1)
    if steps == 6:
      assert np.all(increments == 1)


def test_propose_flops_count_the_passes_run():
  """propose with its intra-patch loop run k more times costs propose +
  k · propose_step (the accounting's linear model), and a run's accounting
  uses the passes it reported."""
  model, params = model_and_params(max_patch_len=6)
  per_call = sampling_cost.callback_flops(model, params, 1.0, 2, 48)
  assert per_call['propose_step'] > 0.2 * per_call['propose']
  options = SamplerOptions(sampler='cached', steps=6, intra_alpha=1e9)
  _, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=2, length=48)
  # at most 6 passes per patch and per buffer (fewer once every patch is complete)
  assert 0 < stats['decoder_passes'] <= 6 * stats['decoder_rows']
  assert stats['decoder_rows'] <= stats['decoder_row_passes'] <= 6 * stats['decoder_rows']
  cost = sampling_cost.run_flops(model, params, options, stats, 2, 48)
  units = 2 * model.patch_config.num_slots
  further_rows = stats['decoder_row_passes'] - stats['decoder_rows']  # passes 2..6, rows run
  assert cost['propose_step'] == pytest.approx(per_call['propose_step'] * further_rows / units)


def test_training_lowers_the_loss_and_the_sampling_command_runs(make_latent_config, corpus_glob,
                                                               tmp_path):
  from bltdiff import commands, generate
  from bltdiff.training import restore
  steps = 20
  config = make_latent_config(**{
      'model.decoder_mode': 'diffusion', 'train.num_steps': steps, 'train.log_every': steps,
      'train.learning_rate': 3e-3, 'train.checkpoint_every': steps, 'sample.steps': 4,
      'sample.sampler': 'cached', 'patching.mode': 'space', 'patching.num_slots': 16,
      'patching.max_patch_len': 6})
  workdir = str(tmp_path / 'run')
  commands.train(config, workdir)
  # The bound on fixed text with the same draws of t and s (common random
  # numbers: the comparison is not swamped by the estimate's variance).
  run = restore.load_for_inference(workdir)
  text = open(sorted(glob.glob(corpus_glob))[0], 'rb').read()
  tokens = np.frombuffer(text[:4 * 32], np.uint8).astype(np.int32).reshape(4, 32)
  bound = jax.jit(lambda p, k: run.model.loss(p, {'tokens': tokens}, k, train=False)[0])
  mean_bound = lambda p: np.mean([float(bound(p, jax.random.PRNGKey(s))) for s in range(8)])
  untrained = nn.unbox(jax.jit(run.model.init)(jax.random.PRNGKey(0), {'tokens': tokens}))
  assert mean_bound(run.params) < 0.8 * mean_bound(untrained)

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  out = str(tmp_path / 'out' / 'sample')
  # The flags: with the cached sampler they set the patch rule.
  with flagsaver.flagsaver(num_samples=2, seed=1, output=out, adaptive_alpha=0.5,
                           min_steps=1, prompt='the'):
    tokens, stats = generate.run_sample_command(workdir)
  assert tokens.shape == (2, config.data.seq_len)
  assert bytes(np.asarray(tokens[0, :3], np.uint8)) == b'the'
  assert stats['decoder_passes'] > 0 and stats['decoder_row_passes'] >= stats['decoder_rows']
  assert np.load(out + '.npy').shape == tokens.shape
  # --intra_speculative reaches the decoder, which refuses it with one stream.
  with flagsaver.flagsaver(num_samples=2, seed=1, output=out, intra_speculative=True):
    with pytest.raises(ConfigError, match=r'^sample\.intra_patch\.speculative: '):
      generate.run_sample_command(workdir)


@pytest.mark.parametrize('sampler, decoder_mode, want', [
    # The proposal's names set the patch rule when the latent sampler has no rule of its own ...
    ('cached', 'diffusion', dict(intra_alpha=0.5, intra_min_steps=3, adaptive_alpha=0.1,
                                 min_steps=1)),
    ('ancestral', 'diffusion', dict(intra_alpha=0.5, intra_min_steps=3, adaptive_alpha=0.1,
                                    min_steps=1)),
    # ... and stay the latent sampler's when it has one, or when there is no patch rule.
    ('adaptive', 'diffusion', dict(intra_alpha=1.0, intra_min_steps=1, adaptive_alpha=0.5,
                                   min_steps=3)),
    ('cached', 'ar', dict(intra_alpha=1.0, intra_min_steps=1, adaptive_alpha=0.5, min_steps=3)),
    ('cached', None, dict(intra_alpha=1.0, intra_min_steps=1, adaptive_alpha=0.5, min_steps=3)),
])
def test_adaptive_alpha_and_min_steps_name_the_patch_rule(sampler, decoder_mode, want):
  sample = common.sample_config(steps=8, sampler=sampler, max_steps=16)
  options = SamplerOptions.from_config(sample, dict(adaptive_alpha=0.5, min_steps=3),
                                       decoder_mode)
  assert {k: getattr(options, k) for k in want} == want
  # The explicit names win; the command line's sampler decides, not the config's.
  options = SamplerOptions.from_config(
      sample, dict(adaptive_alpha=0.5, intra_alpha=2.0, sampler='cached'), 'diffusion')
  assert (options.intra_alpha, options.adaptive_alpha) == (2.0, 0.1)


def test_the_diffusion_decoder_demo_config_validates():
  from bltdiff import config_checks
  from configs import diffusion_decoder_demo
  config = diffusion_decoder_demo.get_config()
  config_checks.validate(config)
  assert (config.model.decoder_mode, config.model.dec_two_stream,
          config.model.dec_entropy_head, config.model.dec_previous_symbol) == (
              'diffusion', True, True, True)

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
import pytest
from absl import flags
from absl.testing import flagsaver

from bltdiff import sampling_cost, vocab
from bltdiff.latent import intra_patch
from bltdiff.latent.diffusion import LatentMDLM
from bltdiff.latent.local_decoder import diffusion_lengths, diffusion_targets
from bltdiff.models import byte_mdlm
from bltdiff.sampling import categorical
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule
from configs import common
from conftest import TINY_LATENT_MODEL

L = 3  # positions per patch in the enumeration tests: 3! orders, 2^3 maskings
SCHEDULE = Schedule('loglinear')  # the default: α = 1 − t, w = 1/t


@functools.lru_cache(maxsize=2)
def model_and_params(max_patch_len=L):
  """A tiny latent MDLM with the `diffusion` decoder, its readout replaced by
  one that puts its mass on 'a', 'b' and the end (logits of about ±12, the
  other symbols 0): predictions that depend strongly on what is visible, and
  patches of several lengths."""
  model = LatentMDLM(common.latent_model(**dict(TINY_LATENT_MODEL, decoder_mode='diffusion')),
                     common.patching_config(mode='space', max_patch_len=max_patch_len,
                                            num_slots=12))
  params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0),
                                        {'tokens': jnp.zeros((1, 48), jnp.int32)}))
  kernel = params['decoder']['readout']['kernel']
  columns = jnp.array([ord('a'), ord('b'), vocab.END_OF_PATCH])
  strong = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (kernel.shape[0], 3))
  params['decoder']['readout']['kernel'] = jnp.zeros_like(kernel).at[:, columns].set(strong)
  return model, params


@functools.lru_cache(maxsize=2)
def denoiser(max_patch_len=L):
  """One intra-patch pass, jitted: (cond [rows, D], z [rows, L]) -> log-probs."""
  model, params = model_and_params(max_patch_len)
  return jax.jit(lambda c, z: model.decoder.denoise_patch(params, c, z))


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


def exact_any_order_nll(cond_nll, n):
  """−log p(y) of the reverse process that reveals one position at a time in
  a uniformly random order: −log (1/n!) Σ_σ Π_k p(y_σk | y_σ<k)."""
  logs = []
  for order in itertools.permutations(range(n)):
    lp = 0.0
    for k, j in enumerate(order):
      lp -= cond_nll(set(order[k:]))[j]
    logs.append(lp)
  return -(np.logaddexp.reduce(logs) - math.log(len(logs)))


def test_nelbo_weighting_is_tight_for_exact_conditionals():
  """If every prediction is the exact conditional of a joint q, each order's
  product is q(y), so the NELBO equals −log q(y): the estimator of
  byte_mdlm.nelbo (which the decoder's bound is) averages to it."""
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
  estimates = np.concatenate([
      np.asarray(byte_mdlm.nelbo(conditionals, x, jax.random.PRNGKey(s), SCHEDULE))
      for s in range(4)])
  exact = -math.log(q[tuple(y)])
  stderr = estimates.std() / math.sqrt(len(estimates))
  assert abs(estimates.mean() - exact) < 4 * stderr + 1e-3, (estimates.mean(), exact, stderr)


def test_decoder_bound_stays_above_the_exact_patch_nll():
  """A tiny decoder whose p(patch | h) is computed exactly (all 3! reveal
  orders): the exact NELBO (all 2^3 maskings) is above it, and the training
  path's Monte Carlo estimate (LatentMDLM.patch_log_prob, t_min = 0) averages
  to the exact NELBO."""
  model, params = model_and_params()
  cond = conditions(1, model.net.dec_dim)
  patch = np.array([ord('a'), ord('b'), vocab.PAD], np.int32)  # 'ab': y = (a, b, END)
  y = np.asarray(diffusion_targets(patch[None], jnp.array([2])))[0]
  assert list(y) == [ord('a'), ord('b'), vocab.END_OF_PATCH]
  cache = {}

  def cond_nll(hidden):
    key = tuple(sorted(hidden))
    if key not in cache:
      z = jnp.asarray(masked_as(y, hidden))[None]
      lp = np.asarray(denoiser()(cond, z))[0]
      cache[key] = {j: -float(lp[j, y[j]]) for j in hidden}
    return cache[key]

  nll = exact_any_order_nll(cond_nll, L)
  bound = exact_nelbo(cond_nll, L)
  assert bound > nll + 1e-3, (bound, nll)  # strictly above: the conditionals disagree

  rows = 2048  # copies of the patch as slots of one row; s antithetic over them
  cond_rows = jnp.broadcast_to(cond[None], (1, rows, cond.shape[-1]))
  tokens = jnp.asarray(np.tile(patch, (1, rows, 1)))
  lengths = jnp.full((1, rows), 2, jnp.int32)
  bound_of = jax.jit(lambda k: -model.patch_log_prob(params, cond_rows, tokens, lengths, k)[0][0])
  draws = np.concatenate([np.asarray(bound_of(jax.random.PRNGKey(s))) for s in range(4)])
  stderr = draws.std() / math.sqrt(len(draws))
  assert abs(draws.mean() - bound) < 4 * stderr, (draws.mean(), bound, stderr)
  assert draws.mean() > nll


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
  np.testing.assert_array_equal(drawn['steps'], want)
  assert int(drawn['passes']) == want.max() and len(set(want[want > 0])) > 1


def reference_draws(model, params, key, cond, order):
  """Intra-patch decoding written out plainly: pass k reveals the positions
  with rank in order[k] (the draw's documented keys: order, then per step)."""
  order_key, step_key = jax.random.split(key)
  rows = cond.shape[0]
  rank = np.argsort(np.argsort(np.asarray(jax.random.uniform(order_key, (rows, L))), -1), -1)
  z = np.full((rows, L), vocab.MASK, np.int32)
  for k, ranks in enumerate(order):
    lp = denoiser()(cond, jnp.asarray(z))
    drawn = np.asarray(categorical.gumbel_argmax(jax.random.fold_in(step_key, k), lp))
    new = np.isin(rank, ranks)
    z = np.where(new, drawn, z)
  lengths = np.asarray(diffusion_lengths(jnp.asarray(z)))
  return np.where(np.arange(L)[None] < lengths[:, None], z, vocab.PAD), lengths


@pytest.mark.parametrize('alpha, order', [(1e9, [[0], [1], [2]]), (0.0, [[0, 1, 2]])])
def test_the_two_limits(alpha, order):
  """α large: one position per pass, L passes (the reverse process the NELBO
  bounds); α = 0 with T_min = 1: one pass, every position drawn from the
  all-masked prediction. Both equal a plain re-implementation for the same key."""
  model, params = model_and_params()
  cond = conditions(8, model.net.dec_dim, seed=3)
  key = jax.random.PRNGKey(4)
  rule = intra_patch.IntraPatchRule(alpha, 1)
  with jax.enable_x64(True):
    drawn = jax.jit(lambda k: model.decoder.draw_revealed(params, k, cond, jnp.ones(8, bool),
                                                          intra_patch=rule))(key)
    whole, whole_lengths, _ = jax.jit(lambda k: model.decoder.draw(params, k, cond,
                                                                   intra_patch=rule))(key)
    want, want_lengths = reference_draws(model, params, key, cond, order)
  assert np.all(np.asarray(drawn['steps']) == len(order)) and int(drawn['passes']) == len(order)
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
  assert stats['decoder_passes'] == 6 * (stats['decoder_passes'] // 6) > 0
  assert stats['decoder_row_passes'] == 6 * stats['decoder_rows']  # every buffer ran 6 passes
  cost = sampling_cost.run_flops(model, params, options, stats, 2, 48)
  units = 2 * model.patch_config.num_slots
  assert cost['propose_step'] == pytest.approx(per_call['propose_step'] * 5 *
                                               stats['decoder_rows'] / units)


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

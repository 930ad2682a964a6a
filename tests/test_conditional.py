"""Conditional training (data.format = 'pairs') for every system: the source is
never masked and never in the loss, the conditional bound is the joint bound
minus the source's share (exact denoiser on a toy), and generation keeps the
source and writes a target after it."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import vocab
from bltdiff.data import pair_batches
from bltdiff.data.packing import BOUNDARY_ENTROPY
from bltdiff.errors import ConfigError
from bltdiff.models import conditional, registry
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule
from bltdiff.training import state
from conftest import tiny_config, tiny_latent_config

L = 32
PAIRS = [(b'the patch', b'is a byte'), (b'', b'model of it'), (b'mask the entropy', b''),
         (b'a', b'target longer than the row can hold, cut')]


def pair_rows():
  rows = [pair_batches.layout_pair({'source': np.frombuffer(s, np.uint8),
                                    'target': np.frombuffer(t, np.uint8)}, seq_len=L)
          for s, t in PAIRS]
  return pair_batches.stack_rows(rows, batch_size=len(rows), seq_len=L)


def target_positions(row: int) -> list[int]:
  """The target symbols of PAIRS[row] in its row, written out from the layout."""
  source, target = PAIRS[row]
  s = min(len(source), (L - 1) // 2)
  kept = min(len(target), L - 1 - s)
  return list(range(s + 1, s + 1 + kept + int(kept == len(target))))  # + END when it ended


def pairs_config(glob, kind):
  """The tiny test configs of `kind` on pair rows of L symbols."""
  if kind == 'latent_mdlm':
    c = tiny_latent_config(glob, **{'patching.num_slots': 16})
  else:
    c = tiny_config(glob, **{'model.kind': kind})
  with c.unlocked():
    c.data.format = 'pairs'
    c.data.seq_len = L
  return c


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  """{kind: (model, params)} at initialisation, for pair rows of L symbols."""
  glob = str(tmp_path_factory.mktemp('unused') / '*.txt')  # no data is read
  out = {}
  for kind in ('byte_ar', 'byte_mdlm', 'latent_mdlm'):
    config = pairs_config(glob, kind)
    model = registry.get_model(config)
    out[kind] = (model, jax.jit(model.init)(jax.random.PRNGKey(0), state.example_batch(config, 2)))
  return out


def test_layout_marks_exactly_the_target_and_its_end():
  rows = pair_rows()
  for r in range(len(PAIRS)):
    assert np.flatnonzero(rows['target_mask'][r]).tolist() == target_positions(r)


def test_byte_ar_scores_the_target_only_and_sees_the_source(models):
  model, params = models['byte_ar']
  rows = pair_rows()
  got = np.asarray(model.target_nll(params, rows))
  logits = np.asarray(model.logits(params, jnp.asarray(rows['tokens'])), np.float64)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for r in range(len(PAIRS)):
    want = -sum(log_p[r, i, rows['tokens'][r, i]] for i in target_positions(r))
    assert got[r] == pytest.approx(want, rel=1e-4)
  changed = dict(rows, tokens=rows['tokens'].copy())
  changed['tokens'][0, 0] = ord('T')  # a source byte: the target is scored given it
  assert np.asarray(model.target_nll(params, changed))[0] != pytest.approx(got[0], rel=1e-6)
  loss, metrics = model.loss(params, rows, jax.random.PRNGKey(0), train=False)
  assert float(loss) == pytest.approx(got.sum() / rows['target_mask'].sum(), rel=1e-5)


def test_byte_mdlm_never_masks_the_source(models):
  model, params = models['byte_mdlm']
  rows = pair_rows()
  seen = []

  def uniform(params, z, dropout_key=None):  # records what the network would be given
    seen.append(np.asarray(z))
    return jnp.full(z.shape + (vocab.NUM_DATA_SYMBOLS,), -math.log(vocab.NUM_DATA_SYMBOLS))

  model.log_probs = uniform
  try:
    x, region = map(np.asarray, conditional.filled_region(rows))
    for t in (0.2, 0.6, 1.0):
      loss, _ = model.loss(params, rows, jax.random.PRNGKey(1), train=False,
                           t=jnp.full((len(PAIRS),), t))
      z = seen[-1]
      masked = z == vocab.MASK
      np.testing.assert_array_equal(z[~region], x[~region])  # source and separator as given
      assert not masked[~region].any()
      if t == 1.0:  # α(1) = 0: every position after the separator is masked
        np.testing.assert_array_equal(masked, region)
      want = masked.sum() * math.log(vocab.NUM_DATA_SYMBOLS) / t / rows['target_mask'].sum()
      assert float(loss) == pytest.approx(want, rel=1e-5)
  finally:
    del model.log_probs


def test_latent_source_slots_are_visible_and_outside_the_bound(models):
  model, params = models['latent_mdlm']
  rows = pair_rows()
  patches, _, source_slots, target_slots = model.pair_patchify(rows)
  source_slots, target_slots = np.asarray(source_slots), np.asarray(target_slots)
  lengths = np.asarray(patches.lengths)
  assert not (source_slots & target_slots).any()
  for r, (source, _) in enumerate(PAIRS):  # slots hold the source + separator, then the target + END
    assert lengths[r][source_slots[r]].sum() == min(len(source), (L - 1) // 2) + 1
    assert lengths[r][target_slots[r]].sum() == rows['target_mask'][r].sum()

  class NetSpy:  # the network call of the loss, recording which slots it was shown
    def __init__(self, net):
      self.net, self.visible = net, []

    def apply(self, variables, pt, visible, *args, **kwargs):
      self.visible.append(np.asarray(visible))
      return self.net.apply(variables, pt, visible, *args, **kwargs)

  def patch_cost(params, cond, pt, lengths):  # −log p(patch) = its length + 1 (hand-checkable)
    shape = lengths.shape + (pt.shape[-1] + 1,)
    return -(lengths + 1.0), jnp.zeros(shape, bool), jnp.zeros(shape, bool)

  net = model.net
  model.net, model.patch_log_prob = NetSpy(net), patch_cost
  try:
    for t in (0.5, 1.0):
      _, metrics = model.loss(params, rows, jax.random.PRNGKey(2), train=False,
                              t=jnp.full((len(PAIRS),), t))
      visible = model.net.visible[-1]
      masked = np.asarray(patches.slot_mask) & ~visible
      assert visible[source_slots].all() and not (masked & ~target_slots).any()
      if t == 1.0:
        np.testing.assert_array_equal(masked, target_slots)
      want = (np.where(masked, lengths + 1, 0).sum() / t
              / (rows['target_mask'].sum() * math.log(2.0)))
      assert float(metrics['diffusion_bpb']) == pytest.approx(want, rel=1e-5)
  finally:
    model.net = net
    del model.patch_log_prob


def toy_log_probs(support, probs):
  """The exact denoiser of a distribution over a few rows: z [b, n] ->
  log p(x_i = v | visible part of z) [b, n, NUM_DATA_SYMBOLS]."""
  support, probs = jnp.asarray(support), jnp.asarray(probs)
  onehot = jax.nn.one_hot(support, vocab.NUM_DATA_SYMBOLS)  # [K, n, V]

  def fn(z):
    fits = jnp.all((z[:, None, :] == vocab.MASK) | (z[:, None, :] == support[None]), -1)
    post = probs[None] * fits
    post = post / post.sum(-1, keepdims=True)
    return jnp.log(jnp.maximum(jnp.einsum('bk,knv->bnv', post, onehot), 1e-30))

  return fn


def test_conditional_bound_is_the_joint_bound_minus_the_source_share():
  """Rows [s0 s1 SEP t0 t1] of a toy distribution. With the exact denoiser
  MDLM's NELBO is exact in expectation, so the source-visible bound is
  −log p(t | s) = −log p(s, t) − (−log p(s)): the joint bound less the
  source's share. Masking the source (region = every position) gives the joint."""
  a, b, c, d, B = ord('a'), ord('b'), ord('c'), ord('d'), vocab.BOUNDARY
  support = np.array([[a, b, B, c, d], [a, b, B, d, c], [b, a, B, c, c], [b, b, B, d, d]])
  probs = np.array([0.5, 0.2, 0.2, 0.1])
  fn, schedule = toy_log_probs(support, probs), Schedule('loglinear')
  n = 16384
  t = (jnp.arange(n) + 0.5) / n  # stratified times over (0, 1)
  x = jnp.asarray(np.repeat(support[:1], n, 0))  # the row 'ab' -> 'cd'
  target_region = jnp.broadcast_to(jnp.arange(5) >= 3, x.shape)
  key = jax.random.PRNGKey(3)
  cond = np.asarray(conditional.region_nelbo(fn, x, target_region, key, schedule, t=t))
  joint = np.asarray(conditional.region_nelbo(fn, x, jnp.ones_like(target_region), key, schedule,
                                              t=t))
  source_share = -math.log(0.5 + 0.2)  # −log p(s = 'ab')
  tol = lambda v: float(4 * v.std() / math.sqrt(n))
  assert cond.mean() == pytest.approx(-math.log(0.5 / 0.7), abs=tol(cond))
  assert joint.mean() == pytest.approx(-math.log(0.5), abs=tol(joint))
  assert cond.mean() <= joint.mean() - source_share + tol(cond) + tol(joint)
  assert joint.mean() - cond.mean() > 0.5 * source_share  # the source is not scored


def test_latent_sources_are_scored_by_the_entropy_model_only_when_given():
  config = pairs_config('unused/*.txt', 'latent_mdlm')
  with config.unlocked():
    config.patching.mode = 'entropy'
    config.data.use_entropies = True
  model = registry.get_model(config)
  rows = pair_batches.source_rows(pair_rows())
  empty = dict(rows, source_len=np.zeros_like(rows['source_len']))
  assert (model.with_source_entropies(empty)['entropies'] == BOUNDARY_ENTROPY).all()
  with pytest.raises(ConfigError, match='^patching.entropy_model'):
    model.with_source_entropies(rows)
  model.entropy_fn = lambda docs: [np.arange(len(d), dtype=np.float32) for d in docs]
  ents = model.with_source_entropies(rows)['entropies']
  for r, s in enumerate(rows['source_len']):
    np.testing.assert_array_equal(ents[r, :s], np.arange(s))
    assert (ents[r, s:] == BOUNDARY_ENTROPY).all()


@pytest.mark.parametrize('kind, sampler', [('byte_ar', 'cached'), ('byte_mdlm', 'cached'),
                                           ('latent_mdlm', 'cached')])
def test_generation_keeps_the_source_and_ends_the_target(models, kind, sampler):
  model, params = models[kind]
  rows = pair_batches.source_rows(pair_rows())
  options = SamplerOptions(sampler=sampler, steps=4, max_steps=4)
  out, stats = model.generate(params, jax.random.PRNGKey(4), options, rows)
  assert out.shape == rows['tokens'].shape and stats['latent_calls'] > 0
  for r, s in enumerate(rows['source_len']):
    np.testing.assert_array_equal(out[r, :s + 1], rows['tokens'][r, :s + 1])
    target, ended = pair_batches.target_of(out[r], s)
    after = out[r, s + 1 + len(target) + int(ended):]
    assert (after == vocab.PAD).all() and (target < vocab.NUM_BYTES).all()

"""Latent MDLM samplers over patch slots: masks, prompts, infilling, caching."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bltdiff import latent_mdlm, latent_sampling, vocab
from bltdiff.errors import ConfigError

MODEL = dict(kind='latent_mdlm', dim=32, num_layers=1, num_heads=2, mlp_dim=64, dropout=0.0,
             enc_dim=32, enc_layers=1, enc_heads=2, enc_mlp_dim=64, pool_queries=2,
             ngram_sizes=(3, 4), hash_buckets=64, dec_dim=32, dec_layers=1, dec_heads=2,
             dec_mlp_dim=64, decoder_mode='ar', schedule='loglinear')
PATCHING = dict(mode='space', threshold=1.0, monotonic_threshold=0.0, reset_on_newline=False,
                static_size=4, max_patch_len=6, num_slots=12, entropy_model='')
LENGTH = 48


def make_model(decoder_mode):
  model = latent_mdlm.LatentMDLM(ml_collections.ConfigDict(dict(MODEL, decoder_mode=decoder_mode)),
                                 ml_collections.ConfigDict(PATCHING))
  params = model.init(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, LENGTH), jnp.int32)})
  return model, params


@pytest.fixture(scope='module')
def ar_model():
  return make_model('ar')


def generated(row):
  n = int(np.sum(row != vocab.PAD))
  assert np.all(row[n:] == vocab.PAD), 'PAD only after the generated symbols'
  return row[:n]


@pytest.mark.parametrize('sampler', latent_sampling.SAMPLERS)
def test_every_sampler_keeps_the_prompt_and_fills_every_slot(ar_model, sampler):
  model, params = ar_model
  prompt = np.frombuffer(b'Hello there ', np.uint8).astype(np.int32)
  tokens, stats = model.sample(params, jax.random.PRNGKey(1), num_samples=2, length=LENGTH,
                               steps=6, sampler=sampler, prefix=prompt, max_steps=6)
  for row in tokens:
    row = generated(row)
    np.testing.assert_array_equal(row[:len(prompt)], prompt)
    assert len(row) > len(prompt)
    assert np.all(row < vocab.NUM_DATA_SYMBOLS)
  assert 1 <= stats['latent_calls'] <= 6


def test_visible_slots_never_change_and_no_mask_is_left(ar_model):
  model, params = ar_model
  prefix = (np.full((2, 6), vocab.PAD, np.int32), np.array([3, 2], np.int32))
  prefix[0][0, :3] = [72, 105, 32]
  prefix[0][1, :2] = [111, 107]
  state = latent_sampling.initial_state(3, 12, 6, prefix, None, gap_slots=7)
  for sampler in latent_sampling.SAMPLERS:
    run = latent_sampling.compiled_sampler(model, sampler, 5, 1.0, (('max_steps', 5),), False)
    from bltdiff import samplers
    final, _ = samplers.run_with_x64(run, params, jax.random.PRNGKey(0),
                                     jax.tree.map(jnp.asarray, state))
    assert not np.asarray(final['masked']).any()
    np.testing.assert_array_equal(np.asarray(final['tokens'])[:, :2], state['tokens'][:, :2])
    lengths = np.asarray(final['lengths'])
    assert np.all((lengths[:, :9] >= 1) & (lengths[:, :9] <= 6)) and np.all(lengths[:, 9:] == 0)


def test_cached_equals_uncached_with_fewer_calls(ar_model):
  model, params = ar_model
  kwargs = dict(num_samples=2, length=LENGTH, steps=40, gap_slots=8)
  cached, cstats = model.sample(params, jax.random.PRNGKey(4), sampler='cached', **kwargs)
  plain, pstats = model.sample(params, jax.random.PRNGKey(4), sampler='ancestral', **kwargs)
  np.testing.assert_array_equal(cached, plain)
  # A call follows each step in which either row revealed a slot: at most 1 + 2 x 8.
  assert pstats['latent_calls'] == 40 and cstats['latent_calls'] <= 17


def test_infilling_keeps_both_sides():
  model, params = make_model('parallel')
  before = np.frombuffer(b'Once upon ', np.uint8).astype(np.int32)
  after = np.frombuffer(b' the end.', np.uint8).astype(np.int32)
  tokens, _ = model.sample(params, jax.random.PRNGKey(2), num_samples=2, length=LENGTH, steps=4,
                           sampler='cached', prefix=before, suffix=after, gap_slots=3)
  for row in tokens:
    row = generated(row)
    np.testing.assert_array_equal(row[:len(before)], before)
    np.testing.assert_array_equal(row[-len(after):], after)
    assert len(row) > len(before) + len(after)


def test_bad_requests_are_clear_errors(ar_model):
  model, params = ar_model
  common = dict(num_samples=1, length=LENGTH, steps=2)
  with pytest.raises(ConfigError, match='^prompt:'):
    model.sample(params, jax.random.PRNGKey(0), prefix=np.frombuffer(b'a b c d e f g h i j k l m',
                                                                      np.uint8), **common)
  with pytest.raises(ConfigError, match='^prompt:'):
    model.sample(params, jax.random.PRNGKey(0), gap_slots=0, **common)
  with pytest.raises(ConfigError, match='^--gap:'):
    model.sample(params, jax.random.PRNGKey(0), prefix=np.array([65]), suffix=np.array([66]),
                 **common)
  with pytest.raises(ConfigError, match='^sample.sampler:'):
    model.sample(params, jax.random.PRNGKey(0), sampler='beam', **common)

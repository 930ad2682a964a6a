"""Latent MDLM samplers over patch slots: masks, prompts, infilling, caching."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import vocab
from bltdiff.errors import ConfigError
from bltdiff.latent import sampling as latent_sampling
from bltdiff.latent.diffusion import LatentMDLM
from bltdiff.sampling import categorical
from bltdiff.sampling.options import SamplerOptions
from bltdiff.sampling.registry import SAMPLERS
from configs import common

MODEL = dict(dim=32, num_layers=1, num_heads=2, mlp_dim=64, enc_dim=32, enc_layers=1,
             enc_heads=2, enc_mlp_dim=64, pool_queries=2, ngram_sizes=(3, 4), hash_buckets=64,
             dec_dim=32, dec_layers=1, dec_heads=2, dec_mlp_dim=64)
PATCHING = dict(mode='space', threshold=1.0, max_patch_len=6, num_slots=12)
LENGTH = 48


def make_model(decoder_mode):
  model = LatentMDLM(common.latent_model(**MODEL, decoder_mode=decoder_mode),
                     common.patching_config(**PATCHING))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, LENGTH), jnp.int32)})
  return model, params


def options(**kw):
  return SamplerOptions(**kw)


@pytest.fixture(scope='module')
def ar_model():
  return make_model('ar')


def generated(row):
  n = int(np.sum(row != vocab.PAD))
  assert np.all(row[n:] == vocab.PAD), 'PAD only after the generated symbols'
  return row[:n]


@pytest.mark.parametrize('sampler', sorted(SAMPLERS))
def test_every_sampler_keeps_the_prompt_and_fills_every_slot(ar_model, sampler):
  model, params = ar_model
  prompt = np.frombuffer(b'Hello there ', np.uint8).astype(np.int32)
  tokens, stats = model.sample(params, jax.random.PRNGKey(1),
                               options(sampler=sampler, steps=6, max_steps=6), num_samples=2,
                               length=LENGTH, prefix=prompt)
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
  state = latent_sampling.initial_state(3, 12, 6, 32, prefix, None, gap_slots=7)
  for sampler in SAMPLERS:
    run = latent_sampling.compiled_sampler(model, options(sampler=sampler, steps=5), False)
    final, _ = categorical.run_with_x64(run, params, jax.random.PRNGKey(0),
                                        jax.tree.map(jnp.asarray, state))
    assert not np.asarray(final['masked']).any()
    np.testing.assert_array_equal(np.asarray(final['tokens'])[:, :2], state['tokens'][:, :2])
    lengths = np.asarray(final['lengths'])
    assert np.all((lengths[:, :9] >= 1) & (lengths[:, :9] <= 6)) and np.all(lengths[:, 9:] == 0)


def test_cached_equals_uncached_with_fewer_calls(ar_model):
  model, params = ar_model
  kwargs = dict(num_samples=2, length=LENGTH, gap_slots=8)
  cached, cstats = model.sample(params, jax.random.PRNGKey(4),
                                options(sampler='cached', steps=40), **kwargs)
  plain, pstats = model.sample(params, jax.random.PRNGKey(4),
                               options(sampler='ancestral', steps=40), **kwargs)
  np.testing.assert_array_equal(cached, plain)
  # A call follows each step in which either row revealed a slot: at most 1 + 2 x 8.
  assert pstats['latent_calls'] == 40 and cstats['latent_calls'] <= 17


def test_infilling_keeps_both_sides():
  model, params = make_model('parallel')
  before = np.frombuffer(b'Once upon ', np.uint8).astype(np.int32)
  after = np.frombuffer(b' the end.', np.uint8).astype(np.int32)
  tokens, _ = model.sample(params, jax.random.PRNGKey(2), options(sampler='cached', steps=4),
                           num_samples=2, length=LENGTH, prefix=before, suffix=after,
                           gap_slots=3)
  for row in tokens:
    row = generated(row)
    np.testing.assert_array_equal(row[:len(before)], before)
    np.testing.assert_array_equal(row[-len(after):], after)
    assert len(row) > len(before) + len(after)


def test_bad_requests_are_clear_errors(ar_model):
  model, params = ar_model
  two_steps = options(steps=2)
  kw = dict(num_samples=1, length=LENGTH)
  with pytest.raises(ConfigError, match='^prompt:'):
    model.sample(params, jax.random.PRNGKey(0), two_steps,
                 prefix=np.frombuffer(b'a b c d e f g h i j k l m', np.uint8), **kw)
  with pytest.raises(ConfigError, match='^prompt:'):
    model.sample(params, jax.random.PRNGKey(0), two_steps, gap_slots=0, **kw)
  with pytest.raises(ConfigError, match='^--gap:'):
    model.sample(params, jax.random.PRNGKey(0), two_steps, prefix=np.array([65]),
                 suffix=np.array([66]), **kw)
  with pytest.raises(ConfigError, match='^sample.sampler:'):
    model.sample(params, jax.random.PRNGKey(0), dataclasses.replace(two_steps, sampler='beam'),
                 **kw)

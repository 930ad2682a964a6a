"""Sample-quality measures on inputs whose answers are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import sample_quality, vocab
from bltdiff.models import byte_ar
from configs import common


def test_unigram_entropy_and_repeats():
  assert sample_quality.unigram_entropy_bits([bytes(range(256))]) == 8.0
  assert sample_quality.unigram_entropy_bits([b'aaaa']) == 0.0
  assert sample_quality.repeated_ngram_fraction([bytes(range(64))]) == 0.0
  looped = sample_quality.repeated_ngram_fraction([b'abcdefgh' * 10])
  assert looped > 0.85


def test_evaluator_bpb_matches_model_loss():
  config = common.byte_model('byte_ar', dim=32, num_layers=1, num_heads=2, mlp_dim=64)
  model = byte_ar.ByteARModel(config)
  tokens = np.random.RandomState(0).randint(0, 256, (4, 16)).astype(np.int32)
  tokens[1, 5] = vocab.BOUNDARY
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.asarray(tokens)})
  _, metrics = model.loss(params, {'tokens': jnp.asarray(tokens)}, jax.random.PRNGKey(0),
                          train=False)
  got = sample_quality.evaluator_bpb(model, params, list(tokens), seq_len=16, batch_size=3)
  np.testing.assert_allclose(got, float(metrics['bpb']), rtol=1e-5)


def test_padding_is_not_scored():
  config = common.byte_model('byte_ar', dim=32, num_layers=1, num_heads=2, mlp_dim=64)
  model = byte_ar.ByteARModel(config)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, 8), jnp.int32)})
  row = np.array([72, 105, 33, vocab.PAD, vocab.PAD], np.int32)
  padded = sample_quality.quality_row([row], model, params, seq_len=8)
  clean = sample_quality.quality_row([row[:3]], model, params, seq_len=8)
  assert np.isfinite(padded['gen_bpb']) and padded == clean and padded['sample_bytes'] == 3


def test_bootstrap_interval_covers_the_ratio_and_shrinks_with_samples():
  rng = np.random.default_rng(0)
  symbols = np.full(400, 256)
  nll = rng.normal(2.0, 0.3, 400) * 256 * np.log(2.0)  # about 2 bits per byte per sample
  low, high = sample_quality.bootstrap_interval(nll, symbols)
  ratio = nll.sum() / symbols.sum() / np.log(2.0)
  assert low < ratio < high and high - low < 0.1
  low16, high16 = sample_quality.bootstrap_interval(nll[:16], symbols[:16])
  assert high16 - low16 > 2 * (high - low)  # ~1/sqrt(n): 16 samples give a much wider one
  assert sample_quality.bootstrap_interval(nll[:1], symbols[:1])[0] == pytest.approx(
      nll[0] / 256 / np.log(2.0))

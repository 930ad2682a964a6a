"""Byte AR: exact bits per byte, document isolation, cached decoding."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bltdiff import byte_ar, vocab

CONFIG = ml_collections.ConfigDict(dict(kind='byte_ar', dim=32, num_layers=2, num_heads=2,
                                        mlp_dim=64, attention_window=6))


def setup_model():
  model = byte_ar.ByteARModel(CONFIG)
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 257, (3, 20)), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), {'tokens': tokens})
  return model, params, tokens


def test_bpb_equals_direct_computation():
  model, params, tokens = setup_model()
  _, metrics = model.loss(params, {'tokens': tokens}, jax.random.PRNGKey(0), train=False)
  # Direct: p(x_t | x_<t) from a fresh forward pass on each prefix alone.
  total = 0.0
  for b in range(tokens.shape[0]):
    for t in range(tokens.shape[1]):
      prefix = tokens[b:b + 1, :t + 1]
      logits = model.logits(params, prefix)[0, t]
      total -= float(jax.nn.log_softmax(logits)[tokens[b, t]])
  direct_bpb = total / tokens.size / math.log(2)
  np.testing.assert_allclose(float(metrics['bpb']), direct_bpb, rtol=1e-5)


def test_documents_do_not_see_each_other():
  model, params, _ = setup_model()
  doc = [72, 101, 108, 108, 111]
  a = jnp.asarray([[1, 2, 3, vocab.BOUNDARY] + doc], jnp.int32)
  b = jnp.asarray([[9, 8, 7, vocab.BOUNDARY] + doc], jnp.int32)
  la, lb = model.logits(params, a), model.logits(params, b)
  # Predictions inside the second document depend only on that document.
  np.testing.assert_allclose(la[0, 4:], lb[0, 4:], atol=1e-5)


def test_cached_decoding_equals_full_recomputation():
  model, params, _ = setup_model()
  prefix = np.array([72, 105, vocab.BOUNDARY, 65], np.int32)
  kwargs = dict(num_samples=3, length=24, prefix=prefix)
  fast, stats = model.sample(params, jax.random.PRNGKey(5), sampler='cached', **kwargs)
  slow, _ = model.sample(params, jax.random.PRNGKey(5), sampler='ancestral', **kwargs)
  np.testing.assert_array_equal(fast, slow)
  assert (fast[:, :4] == prefix).all()
  assert stats['latent_calls'] == 24 - 4

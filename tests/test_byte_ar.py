"""Byte AR: exact bits per byte, document isolation, cached decoding."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import vocab
from bltdiff.models import byte_ar
from bltdiff.sampling.options import SamplerOptions
from configs import common

CONFIG = common.byte_model('byte_ar', dim=32, num_layers=2, num_heads=2, mlp_dim=64,
                           attention_window=6)


def setup_model():
  model = byte_ar.ByteARModel(CONFIG)
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 257, (3, 20)), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': tokens})
  return model, params, tokens


def test_bpb_equals_direct_computation():
  model, params, tokens = setup_model()
  _, metrics = model.loss(params, {'tokens': tokens}, jax.random.PRNGKey(0), train=False)
  logits_fn = jax.jit(model.logits)
  total = 0.0
  for b in range(tokens.shape[0]):
    # Each row alone, scored by hand in float64: -log softmax(logits)[next byte].
    logits = np.asarray(logits_fn(params, tokens[b:b + 1])[0], np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    total -= float(np.sum(logits[np.arange(tokens.shape[1]), tokens[b]] - log_z))
    # Causal: the prediction at t is the same from the prefix alone.
    for t in (0, 7, tokens.shape[1] - 1):
      prefix_logits = logits_fn(params, tokens[b:b + 1, :t + 1])[0, t]
      np.testing.assert_allclose(prefix_logits, logits[t], rtol=1e-4, atol=1e-4)
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
  fast, stats = model.sample(params, jax.random.PRNGKey(5), SamplerOptions(sampler='cached'),
                             **kwargs)
  slow, _ = model.sample(params, jax.random.PRNGKey(5), SamplerOptions(sampler='ancestral'),
                         **kwargs)
  np.testing.assert_array_equal(fast, slow)
  assert (fast[:, :4] == prefix).all()
  assert stats['latent_calls'] == 24 - 4

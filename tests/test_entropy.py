"""Entropy model scoring: isolation across batch rows, documents and chunks."""

import jax
import numpy as np
import pytest

from bltdiff import entropy, vocab
from bltdiff.models import byte_ar
from configs import common


@pytest.fixture(scope='module')
def tiny_model():
  """A randomly initialised tiny ByteAR: isolation does not need training."""
  config = common.byte_model('byte_ar', dim=32, num_layers=2, num_heads=2, mlp_dim=64)
  module = byte_ar.make_byte_ar(config)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))['params']
  return module, params


def _model(tiny_model, **kw):
  module, params = tiny_model
  kw.setdefault('chunk_len', 32)
  kw.setdefault('batch_size', 4)
  return entropy.entropy_model_from_module(module, params, **kw)


def testplan_chunks_tiles_document():
  for length in (1, 31, 32, 33, 100):
    plan = entropy.plan_chunks(length, 32, 12)
    kept = [i for (_, e, k) in plan for i in range(k, e)]
    assert kept == list(range(length))
    for s, e, k in plan:
      assert e - s <= 32 and (s == 0 or k - s == 12)


def test_entropies_ignore_batch_neighbours(tiny_model):
  model = _model(tiny_model)
  rng = np.random.default_rng(0)
  doc = b'The quick brown fox jumps over the lazy dog. ' * 2  # spans several chunks
  others_a = [bytes(rng.integers(0, 256, 50, dtype=np.uint8)) for _ in range(5)]
  others_b = [b'completely different neighbours', b'x' * 70]
  alone = model([doc])[0]
  with_a = model(others_a[:2] + [doc] + others_a[2:])[2]
  with_b = model([doc] + others_b)[0]
  assert alone.shape == (len(doc),) and np.isfinite(alone).all()
  assert (alone > 0).all() and (alone < np.log(vocab.NUM_DATA_SYMBOLS) + 1e-4).all()
  np.testing.assert_allclose(with_a, alone, rtol=0, atol=1e-5)
  np.testing.assert_allclose(with_b, alone, rtol=0, atol=1e-5)


def test_entropies_do_not_cross_boundary(tiny_model):
  model = _model(tiny_model)
  first, second = b'first doc.', b'second one here'
  packed_a = np.array([list(first) + [vocab.BOUNDARY] + list(second)], np.int32)
  packed_b = np.array([list(b'ZZZ other prefix!!') + [vocab.BOUNDARY] + list(second)
                       + [vocab.BOUNDARY] * 7], np.int32)
  ha, hb = model.packed(packed_a), model.packed(packed_b)
  alone = model([second])[0]
  np.testing.assert_allclose(ha[0, len(first) + 1:], alone, atol=1e-5)
  np.testing.assert_allclose(hb[0, 19:19 + len(second)], alone, atol=1e-5)
  assert ha[0, len(first)] == entropy.BOUNDARY_ENTROPY
  # the model itself also stops at BOUNDARY: scoring the packed row in one call
  # gives the same entropies for the second document as scoring it alone
  direct = model.rows(np.pad(packed_a, ((0, 0), (0, 32 - packed_a.shape[1])),
                             constant_values=vocab.BOUNDARY))
  np.testing.assert_allclose(direct[0, len(first) + 1:packed_a.shape[1]], alone, atol=1e-5)


def test_context_is_bounded_and_sees_the_past(tiny_model):
  """A byte sees earlier bytes of its document, but not more than chunk_len - 1."""
  model = _model(tiny_model, chunk_len=16, overlap=8)
  rng = np.random.default_rng(1)
  tail = bytes(rng.integers(97, 123, 40, dtype=np.uint8))
  a = model([b'A' * 30 + tail])[0][30:]
  b = model([b'B' * 30 + tail])[0][30:]
  assert np.abs(a[:4] - b[:4]).max() > 1e-6  # near the change: context matters
  # 16 or more bytes later the prefix is out of every chunk the byte is scored in
  np.testing.assert_allclose(a[16:], b[16:], atol=1e-5)

"""Prepares a corpus with entropies from the tiny entropy model of
tests/test_entropy_scale.py, on however many (fake CPU) devices this process
has; run in a subprocess with --xla_force_host_platform_device_count=8.

  python tests/entropy_worker.py CORPUS_GLOB OUT_DIR   -> prints {"devices": n}
"""

import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bltdiff import entropy  # noqa: E402
from bltdiff.models import byte_ar  # noqa: E402
from configs import common  # noqa: E402
from data_prep import writer  # noqa: E402

SHARD_BYTES = 1500
MODEL = dict(dim=32, num_layers=2, num_heads=2, mlp_dim=64)


@functools.cache
def tiny_model():
  """(module, params) of a randomly initialised tiny ByteAR, seeded: the same
  in every process."""
  module = byte_ar.make_byte_ar(common.byte_model('byte_ar', **MODEL))
  params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))['params']
  return module, params


@functools.cache
def scorer() -> entropy.EntropyModel:
  """The tiny model as an EntropyModel over this process's devices, compiled once."""
  module, params = tiny_model()
  return entropy.entropy_model_from_module(module, params, chunk_len=32, batch_size=4)


def prepare(corpus_glob: str, out: str, **kwargs):
  return writer.prepare('text', out, paths=corpus_glob, validation_fraction=0.1, doc_bytes=0,
                        shard_bytes=SHARD_BYTES, entropy_fn=scorer(), **kwargs)


if __name__ == '__main__':
  prepare(sys.argv[1], sys.argv[2])
  print(json.dumps({'devices': jax.local_device_count()}))

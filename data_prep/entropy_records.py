"""The records of entropy shards: per-byte entropies of a shard's records as float16 bytes.

An entropy shard holds, for record k of its byte shard, the float16 entropies
(nats) of document k [len(doc)], or of a pair record the source's entropies
then the target's, each side scored as a document of its own (see
`data_prep.manifest`). The scoring function is given (bltdiff's entropy model,
`bltdiff.entropy.EntropyModel`); it is called on batches of about
ENTROPY_BATCH_BYTES so that it can fill all its devices.
"""

from typing import Callable

import numpy as np

from data_prep import manifest as mf
from data_prep.errors import DataError

EntropyFn = Callable[[list[bytes]], list[np.ndarray]]

ENTROPY_BATCH_BYTES = 1 << 20  # documents per entropy_fn call, by total bytes


def entropy_records(docs: list[bytes], entropy_fn: EntropyFn) -> list[bytes]:
  """float16 bytes of entropy_fn(docs), checked to be one value per byte."""
  out: list[bytes] = []
  batch: list[bytes] = []

  def flush():
    ents = entropy_fn(list(batch))
    if len(ents) != len(batch):
      raise DataError(f'entropy model returned {len(ents)} arrays for {len(batch)} documents')
    for doc, e in zip(batch, ents):
      e = np.asarray(e)
      if e.shape != (len(doc),):
        raise DataError(f'entropy model returned shape {e.shape} for a document of {len(doc)} bytes')
      out.append(e.astype(np.float16).tobytes())
    batch.clear()

  size = 0
  for doc in docs:
    batch.append(doc)
    size += len(doc)
    if size >= ENTROPY_BATCH_BYTES:
      flush()
      size = 0
  if batch:
    flush()
  return out


def pair_entropy_records(records: list[bytes], entropy_fn: EntropyFn) -> list[bytes]:
  """float16 bytes per pair record: the source's entropies then the target's,
  each side scored as a document of its own (in a pair row the separator
  starts a new document for the entropy model, as BOUNDARY does in text). A
  side seen twice (a passage is the target of one pair and the source of the
  next) is scored once."""
  pairs = [mf.decode_pair(r) for r in records]
  sides = list(dict.fromkeys(side for pair in pairs for side in pair))
  scored = dict(zip(sides, entropy_records(sides, entropy_fn)))
  return [scored[source] + scored[target] for source, target in pairs]

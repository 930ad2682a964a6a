"""Per-byte next-byte entropy from a trained byte AR model (BLT's entropy model).

entropy[t] = H(p(x_t | x_<t)) in nats, over the model's NUM_DATA_SYMBOLS
outputs. A patch starts where this is high (see bltdiff.patching).

Bounded context. Documents are scored independently (never mixed in one row)
in chunks of `chunk_len` bytes that overlap by `overlap` bytes; from every
chunk but the first, only the bytes after the overlap are kept. So byte p of
a document is scored with the previous min(p, c) bytes of *its own document*
as context, where overlap <= c <= chunk_len - 1 (and the model's own
`attention_window`, if set, bounds it further). Entropies therefore do not
depend on batch neighbours, on other documents, or on text further back than
chunk_len - 1 bytes, and a long document costs about
len / (chunk_len - overlap) model calls per chunk.

Packed sequences (documents separated by BOUNDARY, as in training batches)
are split at BOUNDARY on the host; BOUNDARY positions get BOUNDARY_ENTROPY, a
large sentinel that forces a patch start in every entropy mode.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bltdiff import flops, vocab

BOUNDARY_ENTROPY = 1e4  # sentinel at BOUNDARY positions; fits float16 (max 65504)

# apply_fn(params, tokens int32 [batch, n]) -> logits float32 [batch, n, NUM_DATA_SYMBOLS]
ApplyFn = Callable[[Any, jax.Array], jax.Array]


def entropy_from_logits(logits: jax.Array) -> jax.Array:
  """[..., vocab] logits -> [...] entropy in nats (float32)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def plan_chunks(length: int, chunk_len: int, overlap: int) -> list[tuple[int, int, int]]:
  """(start, end, keep_from) byte ranges of one document's chunks.

  Chunk k covers [start, end); its outputs for [keep_from, end) are kept.
  The kept ranges tile [0, length) exactly.
  """
  stride = chunk_len - overlap
  chunks, start = [], 0
  while True:
    end = min(start + chunk_len, length)
    chunks.append((start, end, 0 if start == 0 else start + overlap))
    if end >= length:
      return chunks
    start += stride


class EntropyModel:
  """Scores documents with a byte AR model; `__call__(docs) -> entropies`.

  Every row the model sees is one document chunk of chunk_len bytes, int32.
  A model call takes batch_size rows per device: [batch_size * D, chunk_len]
  over the D local devices of this process, split over a 1-D mesh ('rows')
  with the parameters replicated, so it compiles once and every device runs
  the program a single device runs on batch_size rows (hence the same
  entropies, bit for bit, whatever D). Rows are padded at the end with
  BOUNDARY: the model is causal, so padding after a byte cannot change that
  byte's entropy; padding rows are dropped.
  """

  def __init__(self, apply_fn: ApplyFn, params: Any, *, chunk_len: int,
               overlap: int | None = None, batch_size: int = 16, devices=None):
    if overlap is None:
      overlap = chunk_len // 2
    if not 0 <= overlap < chunk_len:
      raise ValueError(f'need 0 <= overlap < chunk_len, got {overlap}, {chunk_len}')
    self.chunk_len = chunk_len
    self.overlap = overlap
    self.batch_size = batch_size
    # This process's devices only: in a multi-host job each process scores
    # its own documents without waiting for the others.
    self.mesh = Mesh(np.array(devices or jax.local_devices()), ('rows',))
    self.num_devices = self.mesh.size
    self._rows_sharding = NamedSharding(self.mesh, P('rows'))
    self.params = jax.device_put(jax.tree.map(_host_copy, params), NamedSharding(self.mesh, P()))

    def rows_entropy(params, tokens):
      """int32 [batch, chunk_len] -> float32 [batch, chunk_len]."""
      return entropy_from_logits(apply_fn(params, tokens))

    self._rows_entropy = rows_entropy  # unsharded: what `scoring_flops` counts
    self._sharded = jax.jit(rows_entropy, out_shardings=self._rows_sharding)

  @property
  def rows_per_call(self) -> int:
    return self.batch_size * self.num_devices

  def rows(self, tokens: np.ndarray) -> np.ndarray:
    """Entropies of rows that are each one document chunk (no BOUNDARY inside).

    tokens: int [rows, chunk_len] -> float32 [rows, chunk_len]. Rows are
    independent; the batch is padded to a multiple of rows_per_call. All
    calls are dispatched before the first result is fetched, so the devices
    never wait for the host.
    """
    tokens = np.asarray(tokens, np.int32)
    num, step = tokens.shape[0], self.rows_per_call
    pad = (-num) % step
    if pad:
      tokens = np.concatenate(
          [tokens, np.full((pad, tokens.shape[1]), vocab.BOUNDARY, np.int32)])
    out = [self._sharded(self.params, jax.device_put(tokens[i:i + step], self._rows_sharding))
           for i in range(0, tokens.shape[0], step)]
    return (np.concatenate([np.asarray(o) for o in out])[:num] if out
            else np.zeros((0, tokens.shape[1]), np.float32))

  def __call__(self, docs: Sequence[bytes | np.ndarray]) -> list[np.ndarray]:
    """Per-byte entropies (float32 [len(doc)]) of each document.

    A document is bytes or an int array of byte values (no BOUNDARY inside).
    """
    docs = [np.frombuffer(d, np.uint8).astype(np.int32) if isinstance(d, (bytes, bytearray))
            else np.asarray(d, np.int32) for d in docs]
    plan = [(i, s, e, k) for i, d in enumerate(docs)
            for (s, e, k) in plan_chunks(len(d), self.chunk_len, self.overlap) if e > s]
    rows = np.full((len(plan), self.chunk_len), vocab.BOUNDARY, np.int32)
    for r, (i, s, e, _) in enumerate(plan):
      rows[r, :e - s] = docs[i][s:e]
    ent = self.rows(rows)
    out = [np.zeros(len(d), np.float32) for d in docs]
    for r, (i, s, e, k) in enumerate(plan):
      out[i][k:e] = ent[r, k - s:e - s]
    return out

  def packed(self, tokens: np.ndarray) -> np.ndarray:
    """Entropies of packed rows: int [b, n] with documents split by BOUNDARY.

    Returns float32 [b, n]; BOUNDARY positions hold BOUNDARY_ENTROPY. A row's
    first segment is scored as if it started a document (its earlier text is
    not in the row).
    """
    tokens = np.asarray(tokens, np.int32)
    segments = []  # (row, start, end)
    for b, row in enumerate(tokens):
      cuts = np.flatnonzero(row == vocab.BOUNDARY)
      bounds = np.concatenate([[-1], cuts, [len(row)]])
      segments += [(b, s + 1, e) for s, e in zip(bounds[:-1], bounds[1:]) if e > s + 1]
    ents = self([tokens[b, s:e] for b, s, e in segments])
    out = np.full(tokens.shape, BOUNDARY_ENTROPY, np.float32)
    for (b, s, e), h in zip(segments, ents):
      out[b, s:e] = h
    return out

  def scoring_flops(self, doc_lengths) -> float:
    """FLOPs of scoring documents of these lengths (`__call__`): one model
    call per batch_size chunk rows (`bltdiff.flops`; padding rows beyond
    that, to fill every device, are not counted)."""
    rows = sum(len(plan_chunks(n, self.chunk_len, self.overlap)) for n in doc_lengths if n)
    batches = -(-rows // self.batch_size)
    tokens = jax.ShapeDtypeStruct((self.batch_size, self.chunk_len), jnp.int32)
    return batches * flops.count(self._rows_entropy, self.params, tokens)

  def throughput(self, num_batches: int = 3) -> float:
    """Bytes scored per second (after compilation) on full random rows, all
    local devices together."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (self.rows_per_call, self.chunk_len), dtype=np.int32)
    tokens = jax.device_put(tokens, self._rows_sharding)
    jax.block_until_ready(self._sharded(self.params, tokens))  # compile
    t0 = time.perf_counter()
    for _ in range(num_batches):
      jax.block_until_ready(self._sharded(self.params, tokens))
    return num_batches * tokens.size / (time.perf_counter() - t0)


def _host_copy(x):
  """A parameter as a host array. A multi-host job's parameters are global
  arrays: a replicated one is read from this process's own copy."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  if not x.is_fully_replicated:
    raise ValueError('entropy model parameters sharded across processes: replicate them first')
  return np.asarray(x.addressable_data(0))


def entropy_model_from_module(module, params, *, chunk_len: int, overlap: int | None = None,
                              batch_size: int = 16) -> EntropyModel:
  """An EntropyModel from a Linen module with ByteAR's apply signature."""
  apply_fn = lambda p, tokens: module.apply({'params': p}, tokens)
  return EntropyModel(apply_fn, params, chunk_len=chunk_len, overlap=overlap,
                      batch_size=batch_size)

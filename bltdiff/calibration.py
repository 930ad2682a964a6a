"""Threshold calibration: pick θ so that patches average a target size.

Given per-byte entropies of a data sample, a patching mode and a target mean
bytes per patch (e.g. 4.5), bisection finds the threshold: the mean patch
length is non-decreasing in θ (a higher threshold only removes patch starts,
and splitting at ℓ_max never adds more patches to a merged patch than to its
parts), so bisection on θ converges. Which parameter is searched:

  entropy, entropy+monotonic -> threshold (monotonic_threshold kept fixed)
  monotonic                  -> monotonic_threshold
  static                     -> static_size (the best integer)
  space, byte                -> nothing to search; stats only

The sample is packed like training data: documents joined by BOUNDARY into
rows of seq_len bytes, so forced starts (row starts, document starts) and
ℓ_max splits count exactly as they will in training.

The command is `python -m bltdiff.calibrate` (bltdiff/calibrate.py).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import entropy as entropy_lib
from bltdiff import patch_starts, patching, vocab
from bltdiff.data import pair_batches, pipeline


def pack_documents(tokens: Sequence[np.ndarray], entropies: Sequence[np.ndarray],
                   seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Join documents with BOUNDARY into rows.

  Returns tokens int32 [rows, seq_len], entropies float32 [rows, seq_len] and
  valid bool [rows, seq_len] (False on the BOUNDARY padding of the last row).
  """
  tok_parts, ent_parts = [], []
  for i, (t, h) in enumerate(zip(tokens, entropies)):
    if i:
      tok_parts.append(np.array([vocab.BOUNDARY], np.int32))
      ent_parts.append(np.array([entropy_lib.BOUNDARY_ENTROPY], np.float32))
    tok_parts.append(np.asarray(t, np.int32))
    ent_parts.append(np.asarray(h, np.float32))
  tok = np.concatenate(tok_parts) if tok_parts else np.zeros(0, np.int32)
  ent = np.concatenate(ent_parts) if ent_parts else np.zeros(0, np.float32)
  total = len(tok)
  rows = max(1, -(-total // seq_len))
  pad = rows * seq_len - total
  valid = np.arange(rows * seq_len) < total
  tok = np.concatenate([tok, np.full(pad, vocab.BOUNDARY, np.int32)])
  ent = np.concatenate([ent, np.full(pad, entropy_lib.BOUNDARY_ENTROPY, np.float32)])
  shape = (rows, seq_len)
  return tok.reshape(shape), ent.reshape(shape), valid.reshape(shape)


@functools.partial(jax.jit, static_argnames=('config',))
def _count_patches(tokens, entropies, valid, threshold, monotonic_threshold, config):
  starts = patch_starts.compute_starts(tokens, entropies, config, threshold,
                                       monotonic_threshold)
  return jnp.sum(starts & valid)


_patch_jit = jax.jit(patching.patch, static_argnums=2)


def _stats_config(config: patching.PatchConfig, seq_len: int) -> patching.PatchConfig:
  # One slot per byte: nothing can overflow, so every patch is seen.
  return dataclasses.replace(config, num_slots=seq_len)


def patch_lengths(tokens: np.ndarray, entropies: np.ndarray | None, valid: np.ndarray,
                  config: patching.PatchConfig) -> np.ndarray:
  """int [num_patches]: length of every patch that starts at a valid byte."""
  config = _stats_config(config, tokens.shape[-1])
  p = _patch_jit(tokens, entropies, config)
  lengths, offsets, mask = (np.asarray(x) for x in (p.lengths, p.offsets, p.slot_mask))
  valid_len = valid.sum(-1)[:, None]
  return lengths[mask & (offsets < valid_len)]


def length_stats(lengths: np.ndarray) -> dict:
  """mean / p50 / p90 / max bytes per patch, and counts."""
  if len(lengths) == 0:
    return dict(mean_patch_bytes=float('nan'), p50=float('nan'), p90=float('nan'),
                max=0, num_patches=0, num_bytes=0)
  return dict(
      mean_patch_bytes=float(lengths.mean()),
      p50=float(np.percentile(lengths, 50)),
      p90=float(np.percentile(lengths, 90)),
      max=int(lengths.max()),
      num_patches=int(len(lengths)),
      num_bytes=int(lengths.sum()),
  )


def mean_patch_bytes(tokens: np.ndarray, entropies: np.ndarray | None, valid: np.ndarray,
                     fields: dict, config: patching.PatchConfig) -> float:
  """Bytes per patch of config with the calibrated `fields` (calibrate's
  result) on packed documents [rows, seq_len]: how the calibration holds up on
  data it was not fitted on."""
  config = dataclasses.replace(patching.PatchConfig.from_config(config),
                               **{k: fields[k] for k in ('threshold', 'monotonic_threshold',
                                                         'static_size')})
  return length_stats(patch_lengths(tokens, entropies, valid, config))['mean_patch_bytes']


def calibrate(tokens: np.ndarray, entropies: np.ndarray | None, valid: np.ndarray,
              config: patching.PatchConfig, target_mean: float, *,
              rel_tol: float = 0.002, max_iter: int = 60) -> dict:
  """Find the parameter of config.mode giving target_mean bytes per patch.

  tokens/entropies/valid: [rows, seq_len] as from pack_documents. Returns the
  calibrated PatchConfig fields (threshold, monotonic_threshold, static_size),
  the achieved stats, `target_mean` and `reachable` (False when no parameter
  value gets within 5% of the target, e.g. a target above max_patch_len).
  """
  config = _stats_config(patching.PatchConfig.from_config(config), tokens.shape[-1])
  num_bytes = int(valid.sum())
  mode = config.mode
  if mode in patching.ENTROPY_MODES:
    ent = jnp.asarray(entropies, jnp.float32)
    finite = np.asarray(entropies)[np.asarray(tokens) != vocab.BOUNDARY]
    h_max = float(finite.max()) if finite.size else 0.0
    # Below lo every byte starts a patch; above hi no entropy rule fires.
    lo, hi = (-h_max - 1.0, h_max + 1.0)
    field = 'monotonic_threshold' if mode == 'monotonic' else 'threshold'

    def mean_at(theta: float) -> float:
      kw = {field: jnp.float32(theta)}
      kw.setdefault('threshold', jnp.float32(config.threshold))
      kw.setdefault('monotonic_threshold', jnp.float32(config.monotonic_threshold))
      count = int(_count_patches(tokens, ent, valid, config=config, **kw))
      return num_bytes / max(count, 1)

    best = None
    for _ in range(max_iter):
      mid = 0.5 * (lo + hi)
      mean = mean_at(mid)
      if best is None or abs(mean - target_mean) < abs(best[1] - target_mean):
        best = (mid, mean)
      if abs(mean - target_mean) <= rel_tol * target_mean:
        break
      if mean < target_mean:
        lo = mid
      else:
        hi = mid
    config = dataclasses.replace(config, **{field: float(best[0])})
  elif mode == 'static':
    # The mean of static patches is just under static_size (documents cut the
    # last patch short), so only sizes next to the target can be best.
    sizes = range(max(1, int(target_mean) - 1),
                  min(config.max_patch_len, int(target_mean) + 2) + 1)
    means = {s: num_bytes / int(_count_patches(
        tokens, None, valid, 0.0, 0.0,
        config=dataclasses.replace(config, static_size=s))) for s in sizes}
    best_size = min(sizes, key=lambda s: abs(means[s] - target_mean))
    config = dataclasses.replace(config, static_size=best_size)
  stats = length_stats(patch_lengths(tokens, entropies, valid, config))
  return dict(
      mode=mode,
      threshold=config.threshold,
      monotonic_threshold=config.monotonic_threshold,
      reset_on_newline=config.reset_on_newline,
      static_size=config.static_size,
      max_patch_len=config.max_patch_len,
      target_mean=target_mean,
      reachable=bool(abs(stats['mean_patch_bytes'] - target_mean) <= 0.05 * target_mean),
      **stats,
  )


def read_prepared_sample(prepared_dir: str, max_bytes: int, *, with_entropies: bool,
                         split: str = 'train', seed: int = 0):
  """Whole documents of a prepared split, drawn uniformly at random without
  replacement (numpy generator seeded with `seed`) until max_bytes: the stored
  order follows the input files, so its first documents are one or two files
  of a corpus, not the corpus.

  Uses the entropies stored in the shards (data_prep --entropy_model), so no
  model runs here. A directory of pairs gives its sources and targets as the
  documents (`bltdiff.data.pair_batches.pair_documents`).
  """
  if pair_batches.prepared_format(prepared_dir) == 'pairs':
    return pair_batches.pair_documents(prepared_dir, max_bytes, with_entropies=with_entropies,
                                       split=split)
  source = pipeline.DocumentSource(prepared_dir, split, with_entropies=with_entropies)
  tokens, ents, total = [], [], 0
  for i in np.random.default_rng(seed).permutation(len(source)):
    doc = source[int(i)]
    tokens.append(doc['tokens'].astype(np.int32))
    if with_entropies:
      ents.append(doc['entropies'].astype(np.float32))
    total += len(doc['tokens'])
    if total >= max_bytes:
      break
  return tokens, (ents if with_entropies else None)

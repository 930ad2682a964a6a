"""BLT patching: cut byte sequences into patches, with static shapes.

Every function here is pure `jnp`, jit-able and batched over a leading axis:
inputs are `tokens` int32 [batch, num_bytes] (bytes 0..255 and BOUNDARY) and,
for the entropy modes, `entropies` float32 [batch, num_bytes] where
entropies[:, t] is the entropy (nats) of p(x_t | x_<t) under the entropy model.

A patcher first decides which bytes *start* a patch (`starts`, bool
[batch, num_bytes]); everything else (lengths, ids, offsets, slots) follows from
`starts` in `layout_from_starts`. Rules shared by every mode:

- position 0 and every BOUNDARY token always start a patch, so a patch never
  spans two documents;
- a patch longer than `max_patch_len` is split every `max_patch_len` bytes,
  counted from its start, so every patch has 1..max_patch_len bytes.

The modes (`PatchConfig.mode`) and their start rules are in
`bltdiff.patch_starts`.

Overflow: there are `num_slots` (P_max) patch slots. If a row has more patches
than slots, the patches with index >= num_slots are *dropped*: their bytes get
patch id == num_slots (one past the last slot, which `.at[...].set(mode='drop')`
and `jax.nn.one_hot` ignore), they are not in any slot, and they are counted in
`num_overflow_bytes`. No slot is ever stretched beyond max_patch_len. Choose
num_slots >= num_bytes / (smallest acceptable mean patch length) and monitor
`num_overflow_bytes` (it is 0 when num_slots == num_bytes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp

from bltdiff import patch_starts, vocab
from bltdiff.patch_starts import ENTROPY_MODES, MODES  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class PatchConfig:
  """How to patch. Frozen (hashable) so it can be a static jit argument."""
  mode: str = 'entropy'
  threshold: float = 1.5  # nats; `entropy` and `entropy+monotonic`
  monotonic_threshold: float = 0.0  # nats; `monotonic` and `entropy+monotonic`
  reset_on_newline: bool = False
  static_size: int = 4  # `static`
  max_patch_len: int = 8  # ℓ_max
  num_slots: int = 128  # P_max

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'unknown patching mode {self.mode!r}; one of {MODES}')
    if self.max_patch_len < 1 or self.num_slots < 1 or self.static_size < 1:
      raise ValueError(f'sizes must be positive: {self}')

  @classmethod
  def from_config(cls, config: Any) -> 'PatchConfig':
    """From a PatchConfig, a dict or an ml_collections ConfigDict (config.patching)."""
    if isinstance(config, cls):
      return config
    if not isinstance(config, Mapping):
      config = dict(config.items()) if hasattr(config, 'items') else vars(config)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(config).items() if k in names})


@flax.struct.dataclass
class Patches:
  """The patch layout of a batch.

  starts:      bool  [batch, num_bytes]  byte t starts a patch.
  patch_ids:   int32 [batch, num_bytes]  slot of byte t (num_slots if it overflowed).
  positions:   int32 [batch, num_bytes]  index of byte t inside its patch.
  lengths:     int32 [batch, num_slots]  bytes in each slot (0 for empty slots).
  offsets:     int32 [batch, num_slots]  first byte of each slot; for empty
                                         slots, the number of bytes covered
                                         (so offsets is non-decreasing and
                                         offsets + lengths == next offset).
  slot_mask:   bool  [batch, num_slots]  slot holds a real patch.
  num_patches: int32 [batch]             patches in the row, including
                                         overflowed ones (can exceed num_slots).
  num_overflow_bytes: int32 [batch]      bytes not in any slot (see module doc).
  """
  starts: jax.Array
  patch_ids: jax.Array
  positions: jax.Array
  lengths: jax.Array
  offsets: jax.Array
  slot_mask: jax.Array
  num_patches: jax.Array
  num_overflow_bytes: jax.Array

  @property
  def num_slots(self) -> int:
    return self.lengths.shape[-1]


# --- layout -------------------------------------------------------------------


def layout_from_starts(starts: jax.Array, num_slots: int) -> Patches:
  """Patches from bool starts [batch, n] (starts[:, 0] must be True)."""
  n = starts.shape[-1]
  idx = jnp.arange(n, dtype=jnp.int32)
  raw_ids = jnp.cumsum(starts.astype(jnp.int32), axis=-1) - 1
  last_start = jax.lax.cummax(jnp.where(starts, idx, 0), axis=starts.ndim - 1)
  positions = idx - last_start
  in_slot = raw_ids < num_slots
  patch_ids = jnp.where(in_slot, raw_ids, num_slots)

  def per_row(ids, row_starts):
    lengths = jnp.zeros((num_slots,), jnp.int32).at[ids].add(1, mode='drop')
    offsets = jnp.zeros((num_slots,), jnp.int32).at[
        jnp.where(row_starts, ids, num_slots)].set(idx, mode='drop')
    return lengths, offsets

  lengths, offsets = jax.vmap(per_row)(patch_ids, starts)
  slot_mask = lengths > 0
  covered = jnp.sum(in_slot, axis=-1, dtype=jnp.int32)
  offsets = jnp.where(slot_mask, offsets, covered[:, None])
  return Patches(
      starts=starts,
      patch_ids=patch_ids,
      positions=positions,
      lengths=lengths,
      offsets=offsets,
      slot_mask=slot_mask,
      num_patches=raw_ids[:, -1] + 1,
      num_overflow_bytes=n - covered,
  )


def patch(tokens: jax.Array, entropies: jax.Array | None, patch_config: Any,
          threshold=None, monotonic_threshold=None) -> Patches:
  """Patch a batch: tokens int32 [batch, n], entropies float32 [batch, n] or None.

  patch_config: PatchConfig, dict or ConfigDict with the PatchConfig fields.
  Jit-able with patch_config static (a PatchConfig is hashable); the optional
  threshold arguments may be traced.
  """
  config = PatchConfig.from_config(patch_config)
  tokens = jnp.asarray(tokens, jnp.int32)
  if entropies is not None:
    entropies = jnp.asarray(entropies, jnp.float32)
  starts = patch_starts.compute_starts(tokens, entropies, config, threshold, monotonic_threshold)
  return layout_from_starts(starts, config.num_slots)


# --- bytes <-> patches ----------------------------------------------------------


def patch_bytes(tokens: jax.Array, patches: Patches, max_patch_len: int) -> jax.Array:
  """Gather bytes into patches: [batch, n] -> [batch, num_slots, max_patch_len].

  Unused positions (past a patch's length, empty slots) hold PAD.
  """
  j = jnp.arange(max_patch_len, dtype=jnp.int32)
  index = patches.offsets[:, :, None] + j  # [batch, slots, max_patch_len]
  valid = j < patches.lengths[:, :, None]
  n = tokens.shape[-1]
  flat = jnp.clip(index, 0, n - 1).reshape(index.shape[0], -1)
  gathered = jnp.take_along_axis(tokens, flat, axis=-1).reshape(index.shape)
  return jnp.where(valid, gathered, vocab.PAD).astype(jnp.int32)


def unpatch_bytes(patch_tokens: jax.Array, lengths: jax.Array,
                  num_bytes: int) -> jax.Array:
  """Concatenate patches back into bytes: [batch, slots, L] -> [batch, num_bytes].

  Only `lengths` [batch, slots] is needed (not the original layout), so this
  also lays out generated patches. Bytes past sum(lengths) are PAD; patches
  that do not fit in num_bytes are truncated.
  """
  batch, slots, max_len = patch_tokens.shape
  ends = jnp.cumsum(lengths, axis=-1)  # [batch, slots]
  t = jnp.arange(num_bytes, dtype=jnp.int32)
  # slot of byte t = number of patches that end at or before t.
  slot = jax.vmap(lambda e: jnp.searchsorted(e, t, side='right'))(ends)
  slot_c = jnp.clip(slot, 0, slots - 1)
  start = jnp.take_along_axis(ends - lengths, slot_c, axis=-1)
  pos = t - start
  valid = (slot < slots) & (pos < max_len)
  flat = (slot_c * max_len + jnp.clip(pos, 0, max_len - 1))
  out = jnp.take_along_axis(patch_tokens.reshape(batch, -1), flat, axis=-1)
  return jnp.where(valid, out, vocab.PAD).astype(jnp.int32)


def patch_length_histogram(patches: Patches, max_patch_len: int) -> jax.Array:
  """int32 [max_patch_len + 1]: how many patches (in slots) have each length."""
  return jnp.zeros((max_patch_len + 1,), jnp.int32).at[
      patches.lengths.reshape(-1)].add(patches.slot_mask.reshape(-1).astype(jnp.int32),
                                       mode='drop')

"""Which bytes start a patch: the start rules of every patching mode.

Inputs are `tokens` int32 [batch, num_bytes] (bytes 0..255 and BOUNDARY) and,
for the entropy modes, `entropies` float32 [batch, num_bytes], the entropy
(nats) of p(x_t | x_<t) under the entropy model. Every rule returns starts,
bool [batch, num_bytes]; `compute_starts` adds the rules shared by every mode
(position 0 and every BOUNDARY start a patch; a patch longer than
max_patch_len is split every max_patch_len bytes from its start).
`bltdiff.patching` turns starts into the slot layout.

Modes (`PatchConfig.mode`):

- `entropy`: byte t starts a patch if H_t > threshold (BLT's global threshold).
- `monotonic`: byte t starts a patch if H_t - H_{t-1} > monotonic_threshold
  (BLT's approximate monotonicity constraint). The reference H_{t-1} is reset
  to 0 after a BOUNDARY (its entropy is a large sentinel, not a prediction) and,
  with `reset_on_newline`, after a newline byte (a new line is a natural fresh
  start; the entropy at the newline itself would otherwise mask the rise).
- `entropy+monotonic`: both conditions at once (H_t > threshold AND the rise
  exceeds monotonic_threshold): high-entropy bytes start a patch only where
  entropy climbs, so a run of uniformly hard bytes stays one patch instead of
  becoming one patch per byte.
- `static`: fixed size `static_size`, restarting the count at every document.
- `space`: a patch starts after the first byte of a run of non-word bytes,
  where word bytes are ASCII letters, digits and every byte >= 0x80 (UTF-8
  continuation *and* lead bytes, so a multi-byte character is never split --
  BLT's reference counts lead bytes as non-word, which cuts "é" in two). Runs
  of spaces/punctuation are merged as in BLT's reference: "hello, world" ->
  "hello," | " world".
- `byte`: every byte is a patch.
"""

import jax
import jax.numpy as jnp

from bltdiff import vocab

MODES = ('entropy', 'monotonic', 'entropy+monotonic', 'static', 'space', 'byte')
# Modes whose boundaries depend on entropies (and therefore on a threshold).
ENTROPY_MODES = ('entropy', 'monotonic', 'entropy+monotonic')
NEWLINE = 0x0A


def forced_starts(tokens: jax.Array) -> jax.Array:
  """[batch, n] bool: position 0 and every BOUNDARY (document start)."""
  first = jnp.arange(tokens.shape[-1]) == 0
  return first | (tokens == vocab.BOUNDARY)


def _previous(x: jax.Array, fill) -> jax.Array:
  """x shifted right by one along the last axis: out[..., t] = x[..., t-1]."""
  pad = jnp.full(x.shape[:-1] + (1,), fill, x.dtype)
  return jnp.concatenate([pad, x[..., :-1]], axis=-1)


def entropy_starts(entropies: jax.Array, threshold) -> jax.Array:
  """[batch, n] bool: H_t > threshold."""
  return entropies > threshold


def monotonic_starts(tokens: jax.Array, entropies: jax.Array,
                     monotonic_threshold, reset_on_newline: bool) -> jax.Array:
  """[batch, n] bool: H_t - H_{t-1} > monotonic_threshold.

  The reference H_{t-1} is 0 at position 0, after a BOUNDARY and (optionally)
  after a newline byte.
  """
  prev_tokens = _previous(tokens, vocab.BOUNDARY)
  reset = prev_tokens == vocab.BOUNDARY
  if reset_on_newline:
    reset = reset | (prev_tokens == NEWLINE)
  reference = jnp.where(reset, 0.0, _previous(entropies, 0.0))
  return entropies - reference > monotonic_threshold


def is_word_byte(tokens: jax.Array) -> jax.Array:
  """bool: ASCII letter or digit, or any byte >= 0x80 (part of a UTF-8 character)."""
  t = tokens
  return (((t >= ord('0')) & (t <= ord('9'))) | ((t >= ord('A')) & (t <= ord('Z')))
          | ((t >= ord('a')) & (t <= ord('z'))) | ((t >= 0x80) & (t < vocab.NUM_BYTES)))


def space_starts(tokens: jax.Array) -> jax.Array:
  """[batch, n] bool: byte t-1 is the first non-word byte of a run."""
  non_word = ~is_word_byte(tokens)
  ends = non_word & ~_previous(non_word, False)  # first non-word byte of a run
  return _previous(ends, False)


def static_starts(tokens: jax.Array, static_size: int) -> jax.Array:
  """[batch, n] bool: every static_size bytes from each document start."""
  return split_long_patches(forced_starts(tokens), static_size)


def split_long_patches(starts: jax.Array, max_patch_len: int) -> jax.Array:
  """[batch, n] bool: also start a patch every max_patch_len bytes inside a patch.

  starts[..., 0] must be True. Splitting counts from each patch's start, so a
  patch of length L becomes ceil(L / max_patch_len) patches.
  """
  idx = jnp.arange(starts.shape[-1], dtype=jnp.int32)
  last_start = jax.lax.cummax(jnp.where(starts, idx, 0), axis=starts.ndim - 1)
  return starts | ((idx - last_start) % max_patch_len == 0)


def compute_starts(tokens: jax.Array, entropies: jax.Array | None, config,
                   threshold=None, monotonic_threshold=None) -> jax.Array:
  """[batch, n] bool: final patch starts for `config.mode` (a
  patching.PatchConfig), ℓ_max applied.

  threshold / monotonic_threshold override the config's values; they may be
  traced, so a threshold search does not recompile.
  """
  threshold = config.threshold if threshold is None else threshold
  monotonic_threshold = (config.monotonic_threshold if monotonic_threshold is None
                         else monotonic_threshold)
  mode = config.mode
  if mode in ENTROPY_MODES and entropies is None:
    raise ValueError(f'mode {mode!r} needs entropies')
  if mode == 'entropy':
    starts = entropy_starts(entropies, threshold)
  elif mode == 'monotonic':
    starts = monotonic_starts(tokens, entropies, monotonic_threshold,
                              config.reset_on_newline)
  elif mode == 'entropy+monotonic':
    starts = entropy_starts(entropies, threshold) & monotonic_starts(
        tokens, entropies, monotonic_threshold, config.reset_on_newline)
  elif mode == 'static':
    starts = static_starts(tokens, config.static_size)
  elif mode == 'space':
    starts = space_starts(tokens)
  elif mode == 'byte':
    starts = jnp.ones(tokens.shape, bool)
  else:
    raise ValueError(f'unknown patching mode {mode!r}')
  starts = starts | forced_starts(tokens)
  return split_long_patches(starts, config.max_patch_len)

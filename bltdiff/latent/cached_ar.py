"""Drawing patches with the `ar` local decoder byte by byte, with a key/value
cache: position j's pass sees the symbols before it through the cache, so a
patch costs at most L + 1 one-position passes, not (L + 1)² positions.

A row's state through the positions: (cache, previous symbol [k], length [k]
(−1 while decoding; the position of its END_OF_PATCH once drawn), entropy
[k] and log-prob [k] of D's distributions along the path, summed up to and
including the end, symbols [k, L + 1] (PAD after the end)).

  decode_every_position  all L + 1 positions on every row (a scan): whole-batch
                         scores, whose FLOPs need no trip count
  draw_running           the sampler's draws: position 0 on the buffer, then
                         each position on the rows still decoding only
                         (`slot_gather`'s ladder, as `reveal`), stopping once
                         every patch has ended
"""

import jax
import jax.numpy as jnp

from bltdiff import vocab
from bltdiff.latent import slot_gather
from bltdiff.latent.local_decoder import START
from bltdiff.sampling import categorical


def start_state(cache, k: int, max_patch_len: int, valid=None):
  """The state of k rows before position 0 (module doc), from an empty cache of
  k rows; rows not `valid` [k] start ended (length 0) and decode nothing."""
  length = jnp.full((k,), -1, jnp.int32)
  if valid is not None:
    length = jnp.where(valid, length, 0)
  zeros = jnp.zeros((k,), jnp.float32)
  return (cache, jnp.full((k,), START, jnp.int32), length, zeros, zeros,
          jnp.full((k, max_patch_len + 1), vocab.PAD, jnp.int32))


def advance(step, pick, state, j, index):
  """Position j of the buffer rows `index` [r] (None: every row, no gather):
  their state -> the state after j, the symbol chosen there written at column
  j (PAD once ended). step(cache, index, inputs [r, 1], position) ->
  (log-probs [r, V], cache); pick(log-probs [r, V], position, index) -> symbols [r]."""
  cache, previous, length, entropy, total, out = state
  lp, cache = step(cache, index, previous[:, None], j)
  symbol = pick(lp, j, index)
  ended = length >= 0
  entropy = entropy + jnp.where(ended, 0.0, categorical.entropy_of(lp))
  total = total + jnp.where(ended, 0.0, jnp.take_along_axis(lp, symbol[:, None], -1)[:, 0])
  stop = ~ended & (symbol == vocab.END_OF_PATCH)
  length = jnp.where(stop, j, length)
  byte = jnp.where(ended | stop, vocab.PAD, symbol)
  return cache, byte, length, entropy, total, out.at[:, j].set(byte)


def decode_every_position(step, pick, cache, k: int, max_patch_len: int):
  """Every row through all L + 1 positions -> (bytes [k, L] PAD after the end,
  lengths [k], entropy [k], log-prob of the path [k])."""
  position = lambda state, j: (advance(step, pick, state, j, None), None)
  state, _ = jax.lax.scan(position, start_state(cache, k, max_patch_len),
                          jnp.arange(max_patch_len + 1, dtype=jnp.int32))
  _, _, length, entropy, total, out = state
  return out[:, :-1], length, entropy, total  # the symbol chosen at position j is byte j


def draw_running(step, pick, cache, valid, max_patch_len: int):
  """The `valid` [k] rows' draws, stopping once each has drawn its end: position
  0 on the whole buffer, then each position on the rows still decoding only,
  so a buffer costs its patches' len + 1 positions, not L + 1 on every row.
  -> (bytes [k, L], lengths [k], positions run per row [k] (len + 1; 0 where
  not valid), rows run over all positions [])."""
  k = valid.shape[0]
  state = advance(step, pick, start_state(cache, k, max_patch_len, valid), jnp.int32(0), None)
  fill = jax.tree.map(lambda x: jnp.zeros((), x.dtype), state)

  def body(carry):
    j, state, rows_run = carry
    running = state[2] < 0
    new, ran = slot_gather.map_selected(lambda rows_in, index: advance(step, pick, rows_in, j,
                                                                       index),
                                        state, running, fill,
                                        halvings=slot_gather.NESTED_LADDER_HALVINGS)
    keep = lambda n, o: jnp.where(running.reshape((k,) + (1,) * (o.ndim - 1)), n, o)
    return j + 1, jax.tree.map(keep, new, state), rows_run + ran

  # Position L allows only the end (`local_decoder.ar_constrain_at`): every row stops by then.
  _, state, rows_run = jax.lax.while_loop(
      lambda c: (c[0] <= max_patch_len) & jnp.any(c[1][2] < 0), body,
      (jnp.int32(1), state, jnp.int32(0)))
  length, out = state[2], state[5]
  return out[:, :-1], length, jnp.where(valid, length + 1, 0), k + rows_run

"""Reveal decoding of a patch: the `diffusion` decoder's masked-diffusion
reverse process, T_steps(p) passes (`intra_patch`).

Step k of T reveals the hidden positions of rank below ⌊(k+1)·L/T⌋ in a
reveal order drawn per row (`intra_patch.reveal_ranks`), each drawn from the
pass's prediction given what is visible: T = L is one position per step (the
reverse process whose likelihood the NELBO bounds), T = 1 one-pass decoding.
A row stops early once complete (every position before its first end
revealed: the rest can only be the end, `diffusion_decoder.patch_complete`).
The loop runs to the buffer's largest count, but each pass after the first
(its decoder call and its draws) runs on the rows still decoding only,
gathered into the smallest buffer of `slot_gather`'s ladder that holds them:
a pass costs what those rows need, not the whole buffer.
"""

import jax
import jax.numpy as jnp

from bltdiff import vocab
from bltdiff.latent import slot_gather
from bltdiff.latent.diffusion_decoder import patch_complete
from bltdiff.latent.intra_patch import reveal_quota
from bltdiff.sampling import categorical


def reveal_draw(first_log_probs, denoise, steps, rank, key, top_p: float = 1.0, rows=None):
  """first_log_probs [k, L, V]: the all-masked pass; denoise(z [r, L], index
  [r]) -> log-probs [r, L, V] of the hidden positions given the visible ones,
  for the buffer rows `index` (any r of the k); steps [k]: T_steps(p) per row
  (0: not decoded); rank [k, L]: the reveal order; key: step k draws with
  `fold_in(key, k)`; rows as `categorical.inverse_cdf_draw` (default 0..k−1).
  -> (z [k, L] symbols; passes run per row [k]; rows denoise ran, summed [])."""
  k, L = rank.shape
  noise_rows = jnp.arange(k) if rows is None else rows

  def active(step, z):  # [k]: rows still decoding at this step
    return (step < steps) & ~patch_complete(z)

  def reveal(step, log_probs, z, index):  # the rows `index` of the buffer
    drawn = categorical.inverse_cdf_draw(jax.random.fold_in(key, step),
                                         categorical.top_p_filter(log_probs, top_p),
                                         noise_rows[index])
    quota = reveal_quota(step, steps[index], L)
    return jnp.where((z == vocab.MASK) & (rank[index] < quota[:, None]), drawn, z)

  def body(carry):
    step, z, taken, rows_run = carry
    running = active(step, z)
    step_rows = lambda z_rows, index: reveal(step, denoise(z_rows, index), z_rows, index)
    revealed, ran = slot_gather.map_selected(step_rows, z, running, vocab.MASK,
                                             halvings=slot_gather.NESTED_LADDER_HALVINGS)
    z = jnp.where(running[:, None], revealed, z)  # finished rows frozen
    return step + 1, z, taken + running, rows_run + ran

  z = jnp.full((k, L), vocab.MASK, jnp.int32)
  running = active(jnp.int32(0), z)
  z = jnp.where(running[:, None], reveal(jnp.int32(0), first_log_probs, z, jnp.arange(k)), z)
  _, z, taken, rows_run = jax.lax.while_loop(
      lambda c: jnp.any(active(c[0], c[1])), body,
      (jnp.int32(1), z, running.astype(jnp.int32), jnp.int32(0)))
  return z, taken, rows_run

"""Reveal decoding of a patch: the `diffusion` decoder's masked-diffusion
reverse process, T_steps(p) passes (`intra_patch`).

Step k of T reveals the hidden positions of rank below ⌊(k+1)·L/T⌋ in a
reveal order drawn per row (`intra_patch.reveal_ranks`), each drawn from the
pass's prediction given what is visible: T = L is one position per step (the
reverse process whose likelihood the NELBO bounds), T = 1 one-pass decoding.
A row stops early once complete (every position before its first end
revealed: the rest can only be the end, `diffusion_decoder.patch_complete`);
the loop runs to the buffer's largest count, finished rows frozen, and
`denoise` may skip them (`PatchDecoder` runs the running rows only).
"""

import jax
import jax.numpy as jnp

from bltdiff import vocab
from bltdiff.latent.diffusion_decoder import patch_complete
from bltdiff.latent.intra_patch import reveal_quota
from bltdiff.sampling import categorical


def reveal_draw(first_log_probs, denoise, steps, rank, key, top_p: float = 1.0, rows=None):
  """first_log_probs [k, L, V]: the all-masked pass; denoise(z [k, L], running
  [k]) -> (log-probs [k, L, V] of the hidden positions given the visible ones,
  read on the running rows only; rows it ran []); steps [k]: T_steps(p) per
  row (0: not decoded); rank [k, L]: the reveal order; key: step k draws with
  `fold_in(key, k)`; rows as `categorical.gumbel_argmax`.
  -> (z [k, L] symbols; passes run per row [k]; Σ of denoise's rows run [])."""
  k, L = rank.shape

  def active(step, z):  # [k]: rows still decoding at this step
    return (step < steps) & ~patch_complete(z)

  def reveal(step, log_probs, z, running):
    drawn = categorical.gumbel_argmax(jax.random.fold_in(key, step),
                                      categorical.top_p_filter(log_probs, top_p), rows)
    new = (z == vocab.MASK) & (rank < reveal_quota(step, steps, L)[:, None]) & running[:, None]
    return jnp.where(new, drawn, z)  # finished rows frozen

  def body(carry):
    step, z, taken, rows_run = carry
    running = active(step, z)
    log_probs, ran = denoise(z, running)
    return step + 1, reveal(step, log_probs, z, running), taken + running, rows_run + ran

  z = jnp.full((k, L), vocab.MASK, jnp.int32)
  running = active(jnp.int32(0), z)
  z = reveal(jnp.int32(0), first_log_probs, z, running)
  _, z, taken, rows_run = jax.lax.while_loop(
      lambda c: jnp.any(active(c[0], c[1])), body,
      (jnp.int32(1), z, running.astype(jnp.int32), jnp.int32(0)))
  return z, taken, rows_run

"""The `diffusion` local decoder's intra-patch step rule.

The first pass sees all L positions
masked; its summed per-position entropy

    Ĥ(p) = Σ_j H(p_D(y_j | all masked, h_i))                     [rows]

sets the patch's step count T_steps(p) = min(L, max(⌈α·Ĥ(p)⌉, T_min)). Why
this estimate: it is free (the first pass is the first denoising step, run
anyway) and it is the quantity that decides how many steps are safe. One
pass draws the positions independently from these marginals; what that
misses of the joint is the total correlation Σ_j H(y_j) − H(y) ≤ Ĥ(p), so
Ĥ(p) ≈ 0 makes a single pass exact, and a large Ĥ(p) leaves room for
dependence that only sequential reveals capture. It upper-bounds H(y | h_i)
(subadditivity), so it errs towards more steps.

With model.dec_entropy_head, Ĥ(p) is instead a small head's prediction of
the patch's NELBO from h_i alone (`DiffusionDecoder.patch_entropy`, fitted by
least squares to the bound, so E[B̂ | h_i] ≥ H(y | h_i)): no pass at all. Why
both: on trained decoders the first-pass sum came out nearly the same for
every patch (one-stream, β = 2: std 0.09 nats around 22 over 2827
validation patches), so the rule planned one T for all; and a two-stream
decoder near left to right hardly trains the all-masked prediction of any
position but the first.
Step k of T reveals positions in a random order drawn per row
(`reveal_ranks`), ⌊(k+1)·L/T⌋ revealed after it, so T = L is one position
per step (the reverse process whose likelihood the NELBO bounds) and T = 1
is one-pass decoding (`reveal`). With speculative, T caps the passes of
self-speculative decoding instead (`speculative`: the left-to-right chain,
exact when the cap is not reached). A patch stops early once decided. Rows
run to the buffer's largest count of passes, finished rows frozen; every
pass is a decoder call on the whole buffer, which the cost accounting counts
(`decoding.PatchDecoder.draw_revealed`'s `passes`).

The order (model.dec_order_bias = β): Plackett–Luce with weight
k_j = exp(−β·j) for position j, i.e. the next position revealed is j with
probability

    q(j | S) = k_j / Σ_{i ∉ S} k_i          (S: the positions revealed so far)

so of two positions i < j the earlier comes first with probability
σ(β·(j − i)). β = 0 is the uniformly random order of plain masked diffusion
(MDLM's reverse process); β → ∞ is left to right, in which the NELBO becomes
the `ar` decoder's chain rule. It is the same masked diffusion with a
per-position schedule: position j hidden at time s with probability s^(k_j)
(independently), whose reverse process reveals in exactly this order and
whose denoiser is still time-free (which positions are hidden says nothing
of the bytes). `diffusion_decoder.diffusion_patch_nelbo` estimates its NELBO.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class IntraPatchRule(NamedTuple):
  """T_steps(p) = min(L, max(⌈alpha · Ĥ(p)⌉, min_steps)) of the `diffusion` decoder;
  speculative: its passes check left-to-right drafts (`speculative`) instead of
  revealing positions in a random order (`reveal`)."""
  alpha: float
  min_steps: int
  speculative: bool = False


EXACT_INTRA_PATCH = IntraPatchRule(math.inf, 1)  # one position per step: T = L


def reveal_quota(step, steps, num_positions: int):
  """Positions revealed by the end of intra-patch step `step` (0-based) of
  `steps` [rows]: ⌊(step+1)·L/T⌋, so every step reveals at least one (T <= L)."""
  return ((step + 1) * num_positions) // jnp.maximum(steps, 1)


def order_log_weights(num_positions: int, order_bias: float):
  """log k_j = −β·j of the reveal order's Plackett–Luce weights: [L]."""
  return -order_bias * jnp.arange(num_positions, dtype=jnp.float32)


def reveal_ranks(uniform, order_bias: float):
  """A reveal order per row from uniform noise [rows, L] in (0, 1): rank
  [rows, L] int32, 0 = revealed first. Sorting log k_j + Gumbel noise
  draws the Plackett–Luce order (the Gumbel-top-k trick)."""
  gumbel = -jnp.log(-jnp.log(jnp.clip(uniform, 1e-20, 1.0 - 1e-7)))
  keys = order_log_weights(uniform.shape[-1], order_bias) + gumbel
  return jnp.argsort(jnp.argsort(-keys, axis=-1), axis=-1).astype(jnp.int32)


def lookahead_ranks(rank, lookahead: int):
  """rank [rows, L] -> [rows, (1+K)·L] (K = lookahead): query ranks rank − d
  for d = 0..K, block d's query at j seeing the content ranked below
  rank_j − d: all revealed before j but the last d (none when below 0).
  Block 0 is two streams' own query; the others are its lookahead queries
  (model.dec_lookahead, `speculative`)."""
  return jnp.concatenate([rank - d for d in range(lookahead + 1)], axis=1)


def next_reveal_probs(hidden, order_bias: float):
  """q(j | S) [rows, L]: the probability that hidden position j (bool
  [rows, L]) is the next one revealed, 0 at visible positions."""
  logits = jnp.where(hidden, order_log_weights(hidden.shape[-1], order_bias), -jnp.inf)
  return jnp.where(hidden, jax.nn.softmax(logits, axis=-1), 0.0)

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
(subadditivity), so it errs towards more steps. A trained head would cost
parameters and training and predict the same number less directly.
Step k of T reveals positions in a uniformly random order (drawn per row),
⌊(k+1)·L/T⌋ revealed after it, so T = L is one position per step (the
reverse process whose likelihood the NELBO bounds) and T = 1 is one-pass
decoding. Rows run to the buffer's largest T, finished rows frozen; every
pass is a decoder call on the whole buffer, which the cost accounting counts
(`decoding.PatchDecoder.draw_revealed`'s `passes`).
"""

import math
from typing import NamedTuple

import jax.numpy as jnp


class IntraPatchRule(NamedTuple):
  """T_steps(p) = min(L, max(⌈alpha · Ĥ(p)⌉, min_steps)) of the `diffusion` decoder."""
  alpha: float
  min_steps: int


EXACT_INTRA_PATCH = IntraPatchRule(math.inf, 1)  # one position per step: T = L


def reveal_quota(step, steps, num_positions: int):
  """Positions revealed by the end of intra-patch step `step` (0-based) of
  `steps` [rows]: ⌊(step+1)·L/T⌋, so every step reveals at least one (T <= L)."""
  return ((step + 1) * num_positions) // jnp.maximum(steps, 1)

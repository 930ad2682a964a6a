"""Masking schedules α(t) of absorbing-state diffusion and the ELBO weight.

A unit (byte or patch) is still visible at time t with probability α(t);
α(0) ≈ 1 (clean) and α(1) ≈ 0 (all masked). The continuous-time NELBO weights
the cross-entropy of masked units by w(t) = −α'(t) / (1 − α(t)).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

SCHEDULES = ('loglinear', 'linear', 'cosine')


class Schedule(NamedTuple):
  """loglinear: MDLM's σ(t) = −log(1 − (1 − ε)t), i.e. α = 1 − (1 − ε)t. MDLM
  uses ε = 1e-3; the default ε = 0 makes α(1) = 0, so the sampler's all-masked
  start is exactly the forward process's end and the NELBO is a valid bound.
  linear (MD4): α = 1 − t. cosine (MD4): α = 1 − cos(π/2 · (1 − t))."""
  name: str
  eps: float = 0.0

  def alpha(self, t):
    if self.name == 'loglinear':
      return 1.0 - (1.0 - self.eps) * t
    if self.name == 'linear':
      return 1.0 - t
    if self.name == 'cosine':
      return 1.0 - jnp.cos(0.5 * math.pi * (1.0 - t))
    raise ValueError(f'model.schedule: unknown schedule {self.name!r}; expected one of {SCHEDULES}')

  def weight(self, t):
    """w(t) = −α'(t)/(1−α(t)); 1/t for loglinear and linear."""
    if self.name in ('loglinear', 'linear'):  # −α' = 1−ε and 1−α = (1−ε)t
      return 1.0 / t
    if self.name == 'cosine':
      return 0.5 * math.pi * jnp.tan(0.5 * math.pi * (1.0 - t))
    raise ValueError(f'model.schedule: unknown schedule {self.name!r}; expected one of {SCHEDULES}')

  def unmask_probability(self, t, s):
    """P(a unit masked at time t is visible at the earlier time s < t)."""
    alpha_t, alpha_s = self.alpha(t), self.alpha(s)
    return (alpha_s - alpha_t) / (1.0 - alpha_t)


def antithetic_times(key, batch: int, t_min: float = 0.0):
  """[batch] times in (t_min, 1]: one uniform offset spread evenly over the batch
  (MDLM's antithetic sampling), which lowers the variance of the ELBO estimate.

  t_min = 0 gives an unbiased estimate of the whole NELBO (evaluation). MDLM
  trains with t_min = 1e-3 (its sampling_eps) to cut the variance that w = 1/t
  brings near t = 0; the cut interval holds about t_min of the loss."""
  u = jax.random.uniform(key, (), jnp.float32)
  u = jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)  # [0, 1)
  return 1.0 - (1.0 - t_min) * u

"""Which masked units a sampler step reveals.

  ancestral_unmask        MDLM's reverse step t -> s (fixed-step samplers)
  entropy_adaptive_select an entropy budget per step (EB-sampler style)
  confidence_select       reveal what the model is confident about (Fast-dLLM style)

The two `*_select` rules return choose(step, masked, entropy, confidence,
budget) -> (reveal, budget) for `loops.sample_adaptive`.
"""

import math

import jax
import jax.numpy as jnp

from bltdiff.schedules import Schedule


def ancestral_unmask(key, masked, schedule: Schedule, t, s):
  """MDLM's reverse step t → s: each masked unit unmasks with probability
  (α_s − α_t)/(1 − α_t), independently; at s = 0 that is 1, so nothing stays masked.
  masked: bool [batch, units] -> bool [batch, units]."""
  p = schedule.unmask_probability(t, s)
  u = jax.random.uniform(key, masked.shape, jnp.float32)
  return masked & ((u < p) | (s <= 0.0))


def rank_among_masked(score, masked):
  """Rank [batch, units] of each masked unit by ascending score (0 = lowest);
  visible units rank after all masked ones."""
  keyed = jnp.where(masked, score.astype(jnp.float32), jnp.inf)
  order = jnp.argsort(keyed, axis=-1)
  return jnp.argsort(order, axis=-1).astype(jnp.int32)


def reveal_lowest(score, masked, count):
  """Reveals the `count` [batch] masked units with the lowest score."""
  return masked & (rank_among_masked(score, masked) < count[:, None])


def entropy_budget_count(entropy, masked, budget):
  """EB-sampler rule: per row, the size of the largest set of lowest-entropy
  masked units whose summed entropy stays within budget [batch]; at least 1
  while anything is masked. entropy: [batch, units] (nats)."""
  keyed = jnp.where(masked, entropy.astype(jnp.float32), jnp.inf)
  cum = jnp.cumsum(jnp.sort(keyed, axis=-1), axis=-1)
  count = jnp.sum(cum <= budget[:, None], axis=-1)
  return jnp.where(jnp.any(masked, -1), jnp.maximum(count, 1), 0).astype(jnp.int32)


def step_count_bounds(num_masked, step, min_steps: int, max_steps: int):
  """(lowest, highest) number of units to reveal at `step` [batch] so that the
  sampler ends within max_steps and takes at least min_steps."""
  num_masked = num_masked.astype(jnp.int32)
  left_max = jnp.maximum(max_steps - step, 1)
  left_min = jnp.maximum(min_steps - step, 1)
  lowest = -(-num_masked // left_max)  # ceil
  highest = jnp.where(step >= min_steps, num_masked, -(-num_masked // left_min))
  return lowest, highest


def entropy_adaptive_select(alpha: float, min_steps: int, max_steps: int):
  """The entropy-adaptive schedule: T = clip(⌈α·H⌉, min_steps, max_steps), where
  H is the summed entropy estimate of all masked units at the first step; each
  step reveals the largest low-entropy set within the budget H / T (so easy
  text, whose entropy falls as it fills in, takes fewer steps than T, and hard
  text up to max_steps)."""

  def choose(step, masked, entropy, confidence, budget):
    del confidence
    total = jnp.sum(jnp.where(masked, entropy, 0.0), axis=-1)
    target = jnp.clip(jnp.ceil(alpha * total), min_steps, max_steps)
    budget = jnp.where(step == 0, total / target, budget).astype(jnp.float32)
    count = entropy_budget_count(entropy, masked, budget)
    lowest, highest = step_count_bounds(jnp.sum(masked, -1), step, min_steps, max_steps)
    count = jnp.clip(count, lowest, highest)
    return reveal_lowest(entropy, masked, count), budget

  return choose


def confidence_select(threshold: float, min_steps: int, max_steps: int):
  """Fast-dLLM style: reveal every masked unit whose proposal's probability
  exceeds `threshold` (at least one, the most confident), within the step bounds."""
  log_threshold = math.log(threshold)

  def choose(step, masked, entropy, confidence, budget):
    del entropy
    count = jnp.sum(masked & (confidence > log_threshold), axis=-1)
    lowest, highest = step_count_bounds(jnp.sum(masked, -1), step, min_steps, max_steps)
    count = jnp.clip(jnp.maximum(count, 1), lowest, highest)
    return reveal_lowest(-confidence, masked, count), budget

  return choose

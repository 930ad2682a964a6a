"""Which masked units a sampler step reveals.

  ancestral_unmask        MDLM's reverse step t -> s (fixed-step samplers)
  planned_steps           the entropy-adaptive step count T = clip(⌈α·Ĥ⌉, T_min, T_max)
  entropy_adaptive_select lowest-entropy units first, spread over the planned T steps
  confidence_select       reveal what the model is confident about (Fast-dLLM style)

The two `*_select` rules return choose(step, masked, scores, plan) -> reveal
for `loops.sample_adaptive`.
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


def step_count_bounds(num_masked, step, min_steps: int, max_steps: int):
  """(lowest, highest) number of units to reveal at `step` [batch] so that the
  sampler ends within max_steps and takes at least min_steps."""
  num_masked = num_masked.astype(jnp.int32)
  left_max = jnp.maximum(max_steps - step, 1)
  left_min = jnp.maximum(min_steps - step, 1)
  lowest = -(-num_masked // left_max)  # ceil
  highest = jnp.where(step >= min_steps, num_masked, -(-num_masked // left_min))
  return lowest, highest


def planned_steps(alpha: float, remaining_entropy, min_steps: int, max_steps: int):
  """The entropy-adaptive step count of each row: T = clip(⌈α·Ĥ⌉, min_steps,
  max_steps), Ĥ [batch] the model's estimate of the entropy (nats) still to
  generate. int32 [batch]."""
  return jnp.clip(jnp.ceil(alpha * remaining_entropy), min_steps, max_steps).astype(jnp.int32)


def entropy_adaptive_select(min_steps: int, max_steps: int):
  """Reveal the lowest-entropy masked units, spread evenly over each row's
  planned T steps: at step s, ⌈remaining / (T − s)⌉ of them (so the row ends
  after exactly T steps), within the min/max step bounds. Reads the score
  'entropy_scores'; `plan` is T [batch] (`planned_steps`)."""

  def choose(step, masked, scores, plan):
    num_masked = jnp.sum(masked, -1).astype(jnp.int32)
    count = -(-num_masked // jnp.maximum(plan - step, 1))  # ceil
    lowest, highest = step_count_bounds(num_masked, step, min_steps, max_steps)
    count = jnp.clip(count, lowest, highest)
    return reveal_lowest(scores['entropy_scores'], masked, count)

  return choose


def confidence_select(threshold: float, min_steps: int, max_steps: int):
  """Fast-dLLM style: reveal every masked unit the model is confident about —
  'confidence_scores' (log-probability per symbol of its most likely value,
  before any draw: a byte's, or for a latent slot its greedy patch's mean)
  above log(threshold) — at least the most confident one, within the step
  bounds."""
  log_threshold = math.log(threshold)

  def choose(step, masked, scores, plan):
    del plan
    confidence = scores['confidence_scores']
    count = jnp.sum(masked & (confidence > log_threshold), axis=-1)
    lowest, highest = step_count_bounds(jnp.sum(masked, -1), step, min_steps, max_steps)
    count = jnp.clip(jnp.maximum(count, 1), lowest, highest)
    return reveal_lowest(-confidence, masked, count)

  return choose

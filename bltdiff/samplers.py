"""Samplers for absorbing-state (masked) diffusion, shared by byte MDLM and latent MDLM.

A sampler walks t = 1 → 0 over `num_steps` steps. It sees the model through
three callbacks, so the same loop serves bytes and patch slots:

  predict(state) -> prediction            # the expensive network call, time-free
  propose(key, prediction, state) -> proposal   # candidate content for every unit
  commit(state, proposal, unmask) -> state       # write proposals where unmask is True

`state` is a pytree whose `masked(state)` gives bool [batch, units]. Because the
network has no time input, its prediction only changes when the state does: the
cached sampler (MDLM's ddpm_cache) reuses the last prediction after a step that
unmasked nothing, and counts how many real calls it made.

Categorical draws use float64 Gumbel noise: float32 noise truncates the tail of
the Gumbel distribution, which silently lowers the sampling temperature and
fakes a good generative perplexity (Zheng et al. 2024). Run the jitted sampler
under `with jax.enable_x64(True):` (see `run_with_x64`) so float64 exists inside it.
"""

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from bltdiff.schedules import Schedule


def run_with_x64(fn, *args, **kwargs):
  """Calls a jitted sampler with 64-bit types enabled for its trace only."""
  with jax.enable_x64(True):
    return fn(*args, **kwargs)


def gumbel_argmax(key, log_probs):
  """One categorical draw per row of log_probs [..., vocab] -> int32 [...].

  The noise is float64 when x64 is enabled (as inside `run_with_x64`)."""
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  tiny = jnp.finfo(dtype).tiny
  u = jax.random.uniform(key, log_probs.shape, dtype, minval=tiny, maxval=1.0)
  gumbel = -jnp.log(-jnp.log(u))
  return jnp.argmax(log_probs.astype(dtype) + gumbel, axis=-1).astype(jnp.int32)


def top_p_filter(log_probs, top_p: float):
  """Nucleus filtering of log_probs [..., vocab]: keeps the smallest set of
  symbols whose probability reaches top_p (always at least the most likely)."""
  if top_p >= 1.0:
    return log_probs
  sorted_lp = jnp.sort(log_probs, axis=-1)[..., ::-1]
  cum = jnp.cumsum(jnp.exp(sorted_lp), axis=-1)
  # The cut-off is the smallest kept log-prob: all symbols before cum reaches top_p.
  keep_count = jnp.sum(cum - jnp.exp(sorted_lp) < top_p, axis=-1, keepdims=True)
  cutoff = jnp.take_along_axis(sorted_lp, jnp.maximum(keep_count - 1, 0), axis=-1)
  filtered = jnp.where(log_probs >= cutoff, log_probs, -jnp.inf)
  return jax.nn.log_softmax(filtered, axis=-1)


SAMPLER_OPTIONS = ('adaptive_alpha', 'min_steps', 'max_steps', 'confidence_threshold')


def sampler_options(sample_config, overrides: dict | None = None) -> dict:
  """The sampler-specific options of config.sample, with command-line overrides."""
  options = {k: sample_config[k] for k in SAMPLER_OPTIONS if k in sample_config}
  options.update({k: v for k, v in (overrides or {}).items() if v is not None})
  return options


class SamplerStats(NamedTuple):
  latent_calls: jax.Array  # int32 [], network calls actually made (same for the batch)
  steps: jax.Array  # int32 [], denoising steps taken (loop iterations for the batch)
  row_steps: jax.Array  # int32 [batch], steps in which each row revealed something
  proposals: jax.Array  # int32 [], steps that drew proposals (a decoder pass for latent MDLM)


def ancestral_unmask(key, masked, schedule: Schedule, t, s):
  """MDLM's reverse step t → s: each masked unit unmasks with probability
  (α_s − α_t)/(1 − α_t), independently; at s = 0 that is 1, so nothing stays masked.
  masked: bool [batch, units] -> bool [batch, units]."""
  p = schedule.unmask_probability(t, s)
  u = jax.random.uniform(key, masked.shape, jnp.float32)
  return masked & ((u < p) | (s <= 0.0))


def sample_masked(key, state, *, predict: Callable, propose: Callable, commit: Callable,
                  masked: Callable, schedule: Schedule, num_steps: int,
                  cached: bool = True, select: Callable | None = None):
  """Ancestral sampling over `num_steps` equal steps from t=1 to t=0.

  select(key, prediction, state, t, s) -> bool [batch, units] chooses which
  masked units to reveal at a step (default: the MDLM ancestral rule). Every
  step's randomness comes from fold_in(key, step), so the cached and uncached
  samplers draw the same numbers and give identical outputs.
  Returns (final state, SamplerStats).
  """
  if num_steps <= 0:
    raise ValueError(f'sample.steps must be positive, got {num_steps}')
  if select is None:
    select = lambda k, pred, st, t, s: ancestral_unmask(k, masked(st), schedule, t, s)

  def step(carry, i):
    state, prediction, fresh, calls = carry
    if cached:
      prediction = jax.lax.cond(fresh, lambda: prediction, lambda: predict(state))
      calls = calls + jnp.where(fresh, 0, 1).astype(jnp.int32)
    else:
      prediction = predict(state)
      calls = calls + 1
    t = 1.0 - i.astype(jnp.float32) / num_steps
    s = 1.0 - (i + 1).astype(jnp.float32) / num_steps
    step_key = jax.random.fold_in(key, i)
    select_key, propose_key = jax.random.split(step_key)
    unmask = select(select_key, prediction, state, t, s)
    # Proposals only matter where something is revealed; a quiet step (most
    # steps when num_steps exceeds the units) skips the draw, e.g. a whole
    # local-decoder pass for latent MDLM.
    blank = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                         jax.eval_shape(propose, propose_key, prediction, state))
    proposal = jax.lax.cond(jnp.any(unmask), lambda: propose(propose_key, prediction, state),
                            lambda: blank)
    new_state = commit(state, proposal, unmask)
    # The prediction stays valid while nothing was revealed.
    fresh = ~jnp.any(unmask)
    return (new_state, prediction, fresh, calls), jnp.any(unmask, axis=-1)

  if cached:  # the first prediction is always needed; it counts as one call
    init = (state, predict(state), jnp.array(True), jnp.array(1, jnp.int32))
  else:
    placeholder = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                               jax.eval_shape(predict, state))
    init = (state, placeholder, jnp.array(False), jnp.array(0, jnp.int32))
  (state, _, _, calls), revealed = jax.lax.scan(step, init, jnp.arange(num_steps, dtype=jnp.int32))
  return state, SamplerStats(latent_calls=calls, steps=jnp.array(num_steps, jnp.int32),
                             row_steps=jnp.sum(revealed, axis=0).astype(jnp.int32),
                             proposals=jnp.sum(jnp.any(revealed, axis=1)).astype(jnp.int32))


# ---------------------------------------------------------------------------
# Data-dependent samplers: the number of steps depends on what is generated.


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
  text up to max_steps).

  Returns choose(step, masked, entropy, confidence, budget) -> (reveal, budget),
  where budget [batch] is set on the first step."""

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


def sample_adaptive(key, state, *, predict: Callable, propose: Callable, commit: Callable,
                    masked: Callable, scores: Callable, choose: Callable, max_steps: int):
  """Unmasks until nothing is masked (lax.while_loop, at most max_steps steps).

  scores(prediction, proposal, state) -> (entropy [batch, units] in nats,
  confidence [batch, units] = log-prob of each proposal); choose is one of
  entropy_adaptive_select / confidence_select. Every step reveals at least one
  unit per unfinished row, so each step needs a fresh prediction: network
  calls = steps. Returns (state, SamplerStats)."""
  if max_steps <= 0:
    raise ValueError(f'sample.max_steps must be positive, got {max_steps}')
  batch = masked(state).shape[0]

  def cond(carry):
    state, step, *_ = carry
    return jnp.any(masked(state)) & (step < max_steps)

  def body(carry):
    state, step, budget, row_steps = carry
    prediction = predict(state)
    proposal = propose(jax.random.fold_in(key, step), prediction, state)
    entropy, confidence = (x.astype(jnp.float32) for x in scores(prediction, proposal, state))
    is_masked = masked(state)
    reveal, budget = choose(step, is_masked, entropy, confidence, budget)
    row_steps = row_steps + jnp.any(reveal, axis=-1).astype(jnp.int32)
    return commit(state, proposal, reveal), step + 1, budget, row_steps

  init = (state, jnp.array(0, jnp.int32), jnp.zeros((batch,), jnp.float32),
          jnp.zeros((batch,), jnp.int32))
  state, steps, _, row_steps = jax.lax.while_loop(cond, body, init)
  return state, SamplerStats(latent_calls=steps, steps=steps, row_steps=row_steps,
                             proposals=steps)

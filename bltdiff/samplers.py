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


class SamplerStats(NamedTuple):
  latent_calls: jax.Array  # int32 [], network calls actually made (same for the batch)
  steps: jax.Array  # int32 [], denoising steps taken


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
    proposal = propose(propose_key, prediction, state)
    new_state = commit(state, proposal, unmask)
    # The prediction stays valid while nothing was revealed.
    fresh = ~jnp.any(unmask)
    return (new_state, prediction, fresh, calls), None

  if cached:  # the first prediction is always needed; it counts as one call
    init = (state, predict(state), jnp.array(True), jnp.array(1, jnp.int32))
  else:
    placeholder = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                               jax.eval_shape(predict, state))
    init = (state, placeholder, jnp.array(False), jnp.array(0, jnp.int32))
  (state, _, _, calls), _ = jax.lax.scan(step, init, jnp.arange(num_steps, dtype=jnp.int32))
  return state, SamplerStats(latent_calls=calls, steps=jnp.array(num_steps, jnp.int32))

"""The two sampler loops: a fixed number of steps, or until nothing is masked.

A loop walks t = 1 → 0 and sees the model only through its `Adapter`
(`bltdiff.sampling.registry`), three callbacks in the step and two scores:

  predict(state) -> prediction                  the expensive network call, time-free
  propose(key, prediction, state) -> proposal   candidate content for every unit
  commit(state, proposal, unmask) -> state      write proposals where unmask is True
  masked(state) -> bool [batch, units]
  entropy_scores / confidence_scores            (adaptive rules only)

Because the network has no time input, its prediction only changes when the
state does: the cached loop (MDLM's ddpm_cache) reuses the last prediction
after a step that unmasked nothing, and counts how many real calls it made.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from bltdiff.sampling import rules


class SamplerStats(NamedTuple):
  latent_calls: jax.Array  # int32 [], network calls actually made (same for the batch)
  steps: jax.Array  # int32 [], denoising steps taken (loop iterations for the batch)
  # int32 [batch], denoising steps each row took: num_steps for a fixed-step
  # loop; for the while loop the iterations until the row had nothing masked.
  row_steps: jax.Array
  proposals: jax.Array  # int32 [], steps that drew proposals (a decoder pass for latent MDLM)


def summarize(stats: SamplerStats) -> dict:
  """Host-side numbers of a run: latent_calls (network calls for the batch),
  steps (loop iterations), proposals (steps that drew proposals) and
  steps_taken (mean over rows of the steps each row took)."""
  return {'latent_calls': int(stats.latent_calls), 'steps': int(stats.steps),
          'proposals': int(stats.proposals),
          'steps_taken': float(jnp.mean(stats.row_steps.astype(jnp.float32)))}


def _zeros_like_output(fn, *args):
  return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(fn, *args))


def sample_masked(key, state, adapter, *, num_steps: int, cached: bool = True,
                  select: Callable | None = None):
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
    select = lambda k, pred, st, t, s: rules.ancestral_unmask(
        k, adapter.masked(st), adapter.schedule, t, s)

  def step(carry, i):
    state, prediction, fresh, calls = carry
    if cached:
      prediction = jax.lax.cond(fresh, lambda: prediction, lambda: adapter.predict(state))
      calls = calls + jnp.where(fresh, 0, 1).astype(jnp.int32)
    else:
      prediction = adapter.predict(state)
      calls = calls + 1
    t = 1.0 - i.astype(jnp.float32) / num_steps
    s = 1.0 - (i + 1).astype(jnp.float32) / num_steps
    select_key, propose_key = jax.random.split(jax.random.fold_in(key, i))
    unmask = select(select_key, prediction, state, t, s)
    # Proposals only matter where something is revealed; a quiet step (most
    # steps when num_steps exceeds the units) skips the draw, e.g. a whole
    # local-decoder pass for latent MDLM.
    blank = _zeros_like_output(adapter.propose, propose_key, prediction, state)
    proposal = jax.lax.cond(jnp.any(unmask),
                            lambda: adapter.propose(propose_key, prediction, state),
                            lambda: blank)
    new_state = adapter.commit(state, proposal, unmask)
    fresh = ~jnp.any(unmask)  # the prediction stays valid while nothing was revealed
    return (new_state, prediction, fresh, calls), jnp.any(unmask, axis=-1)

  if cached:  # the first prediction is always needed; it counts as one call
    init = (state, adapter.predict(state), jnp.array(True), jnp.array(1, jnp.int32))
  else:
    placeholder = _zeros_like_output(adapter.predict, state)
    init = (state, placeholder, jnp.array(False), jnp.array(0, jnp.int32))
  (state, _, _, calls), revealed = jax.lax.scan(step, init, jnp.arange(num_steps, dtype=jnp.int32))
  batch = revealed.shape[1]
  return state, SamplerStats(latent_calls=calls, steps=jnp.array(num_steps, jnp.int32),
                             row_steps=jnp.full((batch,), num_steps, jnp.int32),
                             proposals=jnp.sum(jnp.any(revealed, axis=1)).astype(jnp.int32))


def sample_adaptive(key, state, adapter, *, choose: Callable, max_steps: int,
                    uses_entropy: bool, uses_confidence: bool):
  """Unmasks until nothing is masked (lax.while_loop, at most max_steps steps).

  choose(step, masked, entropy, confidence, budget) -> (reveal, budget) is a
  rule of `bltdiff.sampling.rules`; only the scores it reads are computed
  (uses_entropy / uses_confidence: each can cost a decoder pass). Every step
  reveals at least one unit per unfinished row, so each step needs a fresh
  prediction: network calls = steps. Returns (state, SamplerStats)."""
  if max_steps <= 0:
    raise ValueError(f'sample.max_steps must be positive, got {max_steps}')
  batch = adapter.masked(state).shape[0]

  def cond(carry):
    state, step, *_ = carry
    return jnp.any(adapter.masked(state)) & (step < max_steps)

  def body(carry):
    state, step, budget, row_steps = carry
    prediction = adapter.predict(state)
    proposal = adapter.propose(jax.random.fold_in(key, step), prediction, state)
    is_masked = adapter.masked(state)
    zeros = jnp.zeros(is_masked.shape, jnp.float32)
    entropy = (adapter.entropy_scores(prediction, state).astype(jnp.float32)
               if uses_entropy else zeros)
    confidence = (adapter.confidence_scores(prediction, proposal, state).astype(jnp.float32)
                  if uses_confidence else zeros)
    reveal, budget = choose(step, is_masked, entropy, confidence, budget)
    row_steps = row_steps + jnp.any(reveal, axis=-1).astype(jnp.int32)
    return adapter.commit(state, proposal, reveal), step + 1, budget, row_steps

  init = (state, jnp.array(0, jnp.int32), jnp.zeros((batch,), jnp.float32),
          jnp.zeros((batch,), jnp.int32))
  state, steps, _, row_steps = jax.lax.while_loop(cond, body, init)
  return state, SamplerStats(latent_calls=steps, steps=steps, row_steps=row_steps,
                             proposals=steps)

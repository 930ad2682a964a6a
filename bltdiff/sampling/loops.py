"""The two sampler loops: a fixed number of steps, or until nothing is masked.

A loop walks t = 1 → 0 and sees the model only through its `Adapter`
(`bltdiff.sampling.registry`): three callbacks in the step,

  predict(state) -> prediction                        the expensive network call, time-free
  propose(key, prediction, state, unmask) -> proposal content for the units to reveal
  commit(state, proposal, unmask) -> state            write proposals where unmask is True

plus `masked(state)` and the scores the data-dependent rules read. Which units
a step reveals is decided before anything is drawn, so `propose` only has to
produce the revealed units (a latent decoder pass over those slots alone).

Because the network has no time input, its prediction only changes when the
state does: the cached loop (MDLM's ddpm_cache) reuses the last prediction
after a step that unmasked nothing, and counts how many real calls it made.
Calls are made for the whole batch; `row_calls` says how many one row alone
would have needed (a row that revealed nothing at a step needs no new call).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from bltdiff.sampling import rules


class SamplerStats(NamedTuple):
  latent_calls: jax.Array  # int32 [], network calls actually made (for the whole batch)
  steps: jax.Array  # int32 [], denoising steps taken (loop iterations for the batch)
  # int32 [batch], denoising steps each row took: num_steps for a fixed-step
  # loop; for the while loop the iterations until the row had nothing masked.
  row_steps: jax.Array
  row_calls: jax.Array  # int32 [batch], network calls the row alone would have needed
  proposals: jax.Array  # int32 [], steps that drew proposals (a decoder pass for latent MDLM)


def summarize(stats: SamplerStats) -> dict:
  """Host-side numbers of a run: latent_calls (network calls for the batch),
  row_latent_calls (mean over rows of the calls one row alone needs), steps
  (loop iterations), proposals (steps that drew proposals) and steps_taken
  (mean over rows of the steps each row took)."""
  mean = lambda x: float(jnp.mean(x.astype(jnp.float32)))
  return {'latent_calls': int(stats.latent_calls), 'row_latent_calls': mean(stats.row_calls),
          'steps': int(stats.steps), 'proposals': int(stats.proposals),
          'steps_taken': mean(stats.row_steps)}


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
    # A quiet step (most steps when num_steps exceeds the units) draws nothing,
    # e.g. no local-decoder pass for latent MDLM.
    blank = _zeros_like_output(adapter.propose, propose_key, prediction, state, unmask)
    proposal = jax.lax.cond(jnp.any(unmask),
                            lambda: adapter.propose(propose_key, prediction, state, unmask),
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
  # A row alone calls at the first step and after each step in which it revealed something.
  row_calls = (1 + jnp.sum(revealed[:-1], axis=0) if cached
               else jnp.full((batch,), num_steps)).astype(jnp.int32)
  return state, SamplerStats(latent_calls=calls, steps=jnp.array(num_steps, jnp.int32),
                             row_steps=jnp.full((batch,), num_steps, jnp.int32),
                             row_calls=row_calls,
                             proposals=jnp.sum(jnp.any(revealed, axis=1)).astype(jnp.int32))


def sample_adaptive(key, state, adapter, *, choose: Callable, max_steps: int,
                    scores: tuple[str, ...] = (), plan: Callable | None = None):
  """Unmasks until nothing is masked (lax.while_loop, at most max_steps steps).

  scores: names of adapter score methods computed at every step, each
  score(prediction, state) -> [batch, units]; plan(prediction, state) -> [batch]
  is computed once from the first prediction (e.g. each row's step count);
  choose(step, masked, scores: dict, plan) -> bool [batch, units] (a rule of
  `bltdiff.sampling.rules`). Every step reveals at least one unit per
  unfinished row, so each step but the first needs a fresh prediction: network
  calls = steps. Returns (state, SamplerStats)."""
  if max_steps <= 0:
    raise ValueError(f'sample.max_steps must be positive, got {max_steps}')
  is_masked = adapter.masked(state)
  batch = is_masked.shape[0]
  first = adapter.predict(state)
  planned = plan(first, state) if plan is not None else jnp.zeros((batch,), jnp.int32)

  def cond(carry):
    state, step, *_ = carry
    return jnp.any(adapter.masked(state)) & (step < max_steps)

  def body(carry):
    state, step, prediction, row_steps = carry
    prediction = jax.lax.cond(step == 0, lambda: prediction, lambda: adapter.predict(state))
    is_masked = adapter.masked(state)
    values = {name: getattr(adapter, name)(prediction, state).astype(jnp.float32)
              for name in scores}
    reveal = choose(step, is_masked, values, planned)
    proposal = adapter.propose(jax.random.fold_in(key, step), prediction, state, reveal)
    row_steps = row_steps + jnp.any(reveal, axis=-1).astype(jnp.int32)
    return adapter.commit(state, proposal, reveal), step + 1, prediction, row_steps

  init = (state, jnp.array(0, jnp.int32), first, jnp.zeros((batch,), jnp.int32))
  state, steps, _, row_steps = jax.lax.while_loop(cond, body, init)
  return state, SamplerStats(latent_calls=steps, steps=steps, row_steps=row_steps,
                             row_calls=row_steps, proposals=steps)

"""The sampler registry: a sampler is one function and one entry in SAMPLERS.

A model makes itself samplable by supplying an `Adapter` over its sampler
state (bytes for byte MDLM, patch slots for latent MDLM); every sampler here
then works for it. To add a sampler: write `def my_sampler(adapter, key,
state, options) -> (state, SamplerStats)`, add it to SAMPLERS, add any new
option to `SamplerOptions` (the command's flags follow), and test it.
"""

import dataclasses
from typing import Any, Callable, Protocol

import jax

from bltdiff.sampling import loops, rules
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule


class Adapter(Protocol):
  """A model's sampler state, seen by the loops. `state` is any pytree whose
  `masked(state)` is bool [batch, units]."""

  schedule: Schedule  # the forward process's α(t), for MDLM's ancestral rule

  def predict(self, state) -> Any:
    """The expensive, time-free network call."""

  def propose(self, key, prediction, state, unmask) -> Any:
    """Content for the units in unmask [batch, units] (others: anything)."""

  def commit(self, state, proposal, unmask) -> Any:
    """The state with proposals written where unmask is True."""

  def masked(self, state) -> jax.Array:
    """bool [batch, units]: still to generate."""

  def entropy_scores(self, prediction, state) -> jax.Array:
    """float [batch, units]: how uncertain each unit is (nats; adaptive ranks by it)."""

  def remaining_entropy(self, prediction, state) -> jax.Array:
    """float [batch]: the model's estimate of the entropy (nats) of all that is
    still masked (adaptive plans its step count from it)."""

  def confidence_scores(self, prediction, state) -> jax.Array:
    """float [batch, units]: log-probability of each unit's most likely value."""


@dataclasses.dataclass(frozen=True)
class ModelAdapter:
  """What the models' adapters share: the model object (which holds the
  schedule), its parameters and the nucleus mass of its draws."""
  model: Any
  params: Any
  top_p: float

  @property
  def schedule(self) -> Schedule:
    return self.model.schedule


SamplerFn = Callable[[Adapter, jax.Array, Any, SamplerOptions], tuple[Any, loops.SamplerStats]]


def ancestral(adapter, key, state, options: SamplerOptions):
  """MDLM's ancestral sampler: `steps` equal steps, a network call at each."""
  return loops.sample_masked(key, state, adapter, num_steps=options.steps, cached=False)


def cached(adapter, key, state, options: SamplerOptions):
  """Ancestral, but a step that revealed nothing reuses the last prediction
  (MDLM's ddpm_cache): the same samples for the same key, fewer calls."""
  return loops.sample_masked(key, state, adapter, num_steps=options.steps, cached=True)


# The adapter passes each sampler makes besides predict and propose, for cost
# accounting (`bltdiff.sampling_cost`): (method, once per run or per step).
EXTRA_PASSES = {'adaptive': (('remaining_entropy', 'run'), ('entropy_scores', 'step')),
                'confidence': (('confidence_scores', 'step'),)}


def adaptive(adapter, key, state, options: SamplerOptions):
  """Entropy-adaptive: each row plans T = clip(⌈adaptive_alpha · Ĥ⌉, min_steps,
  max_steps) steps from the model's estimate Ĥ of what is still to generate,
  then reveals its lowest-entropy units first, evenly over those T steps."""
  plan = lambda prediction, st: rules.planned_steps(
      options.adaptive_alpha, adapter.remaining_entropy(prediction, st), options.min_steps,
      options.step_cap)
  choose = rules.entropy_adaptive_select(options.min_steps, options.step_cap)
  return loops.sample_adaptive(key, state, adapter, choose=choose, max_steps=options.step_cap,
                               scores=('entropy_scores',), plan=plan)


def confidence(adapter, key, state, options: SamplerOptions):
  """Confidence threshold: reveal every unit whose most likely value is more
  probable than confidence_threshold (at least one), within min/max steps."""
  choose = rules.confidence_select(options.confidence_threshold, options.min_steps,
                                   options.step_cap)
  return loops.sample_adaptive(key, state, adapter, choose=choose, max_steps=options.step_cap,
                               scores=('confidence_scores',))


SAMPLERS: dict[str, SamplerFn] = {
    'ancestral': ancestral,
    'cached': cached,
    'adaptive': adaptive,
    'confidence': confidence,
}


def run(adapter: Adapter, key, state, options: SamplerOptions):
  """Runs options.sampler (call inside jit, under categorical.run_with_x64)."""
  return SAMPLERS[options.sampler](adapter, key, state, options)

"""What a sampling run costs, in FLOPs, from the calls it reports making.

A diffusion sampler's work is its adapter's callbacks (`sampling.registry`),
each counted by `bltdiff.flops` on the run's batch and multiplied by how often
the run made it:

  predict            x latent_calls   the network (latent: the latent transformer)
  propose            x proposals      the draw for every unit (byte MDLM)
                     or per slot row x decoder_rows   (latent: the local decoder
                                      runs on the revealed slots' rows only;
                                      `diffusion`: its first pass and the draws)
  propose_step       per slot row x (decoder_row_passes − decoder_rows)
                                      (latent `ar` and `diffusion`: each further
                                      intra-patch pass the run executed, on the rows
                                      it ran: propose's while loop counted by trip count)
  commit             per slot row x encoder_rows      (latent: the local encoder
                                      encodes each slot once, when revealed)
  entropy_scores     x steps          adaptive sampler (latent: D's first position)
  remaining_entropy  x 1              adaptive sampler's plan (latent: one draw of all slots)
  confidence_scores  x steps          confidence sampler (latent: D's greedy patch of
                                      every slot, an upper bound: it runs on masked ones)

plus, for a prompted latent run in an entropy mode, the entropy model on the
prompt. Byte AR makes one cached decoder step per position. What is left out:
the loops' own bookkeeping (ranking, masks, the Gumbel draw of the patch
count), which `tests/test_sampling_cost.py` bounds at a few per cent of a run
by counting the whole compiled sampler with the run's trip count.
"""

import dataclasses

import jax
import jax.numpy as jnp

from bltdiff import flops
from bltdiff.latent.sampling import intra_patch_rule
from bltdiff.models import byte_ar
from bltdiff.sampling import categorical, registry
from bltdiff.sampling.options import SamplerOptions


def callback_flops(model, params, top_p: float, num_samples: int, length: int,
                   intra_patch=None) -> dict:
  """FLOPs of one call of each adapter callback on an unprompted batch of
  num_samples rows, every unit revealed (so gathering samplers count all their
  rows): {'predict', 'propose', 'commit', 'entropy_scores',
  'remaining_entropy', 'confidence_scores'}, and 'propose_step' (one more
  intra-patch pass of the `ar` or `diffusion` decoder; 0 for others): propose with
  its loop run k more times costs propose + k · propose_step. intra_patch:
  the `diffusion` decoder's rule the run used (its loop body differs with
  intra_patch.speculative); None: the adapter's default."""
  adapter, state = model.sampler_adapter(params, top_p, num_samples, length)
  if intra_patch is not None and intra_patch_loop(model):
    adapter = dataclasses.replace(adapter, intra_patch=intra_patch)
  key = jax.random.PRNGKey(0)
  with jax.enable_x64(True):  # as the samplers trace (float64 Gumbel noise)
    prediction = jax.eval_shape(adapter.predict, state)
    unmask = jnp.ones(adapter.masked(state).shape, bool)
    proposal = jax.eval_shape(adapter.propose, key, prediction, state, unmask)
    propose = lambda trips: flops.count(adapter.propose, key, prediction, state, unmask,
                                        while_trips=trips)
    out = {'predict': flops.count(adapter.predict, state), 'propose': propose(0),
           'commit': flops.count(adapter.commit, state, proposal, unmask)}
    out['propose_step'] = propose(1) - out['propose'] if intra_patch_loop(model) else 0.0
    for name in ('entropy_scores', 'remaining_entropy', 'confidence_scores'):
      out[name] = flops.count(getattr(adapter, name), prediction, state)
  return out


def intra_patch_loop(model) -> bool:
  """Whether the model's proposals run a data-dependent loop of decoder
  passes (latent MDLM with the `ar` or `diffusion` local decoder: their
  passes after the first stop once every patch in the buffer is decided)."""
  return getattr(model, 'decoder_mode', None) in ('ar', 'diffusion')


def calls_made(options: SamplerOptions, stats: dict, units: int) -> dict:
  """How often a run made each callback (for gathering samplers, in units of
  a call over all `units` rows), from its stats."""
  passes = dict(registry.EXTRA_PASSES.get(options.sampler, ()))
  out = {'predict': stats['latent_calls'], 'propose': stats['proposals'], 'commit': 0,
         'propose_step': 0}
  if 'decoder_rows' in stats:  # the local decoder and encoder ran on these rows only
    out['propose'] = stats['decoder_rows'] / units
    out['commit'] = stats['encoder_rows'] / units

  for name in ('entropy_scores', 'remaining_entropy', 'confidence_scores'):
    out[name] = {'step': stats['steps'], 'run': 1}.get(passes.get(name), 0)
  return out


def ar_step_flops(model: byte_ar.ByteARModel, params, num_samples: int, length: int) -> float:
  """FLOPs of one cached decoder step of byte AR and its draw, for a batch
  (attention reads the whole fixed-length cache, so every step costs the same)."""
  cache = jax.eval_shape(lambda: model.decoder.init(
      jax.random.PRNGKey(0), jnp.zeros((num_samples, length), jnp.int32))['cache'])
  x = jnp.zeros((num_samples, 1), jnp.int32)

  def step(p, c, x, key):
    logits, _ = model.decoder.apply({'params': p, 'cache': c}, x, jnp.zeros_like(x),
                                    jnp.ones_like(x), method=byte_ar.ByteAR.decode_step,
                                    mutable=['cache'])
    return categorical.gumbel_argmax(key, jax.nn.log_softmax(logits[:, 0], axis=-1))

  with jax.enable_x64(True):
    return flops.count(step, params, cache, x, jax.random.PRNGKey(0))


def run_flops(model, params, options: SamplerOptions, stats: dict, num_samples: int,
              length: int, prompt_flops: float = 0.0) -> dict:
  """FLOPs of a whole sampling run (one batch of num_samples rows of `length`):
  {'total', and per component}. prompt_flops: the entropy model on the prompt
  (`EntropyModel.scoring_flops`), when a prompt was patched."""
  if isinstance(model, byte_ar.ByteARModel):
    step = ar_step_flops(model, params, num_samples, length)
    return {'total': step * stats['steps'] + prompt_flops, 'decode_steps': step * stats['steps']}
  adapter, state = model.sampler_adapter(params, options.top_p, num_samples, length)
  units = adapter.masked(state).size  # rows x slots (latent) or rows x bytes
  per_call = callback_flops(model, params, options.top_p, num_samples, length,
                            intra_patch_rule(options))
  calls = calls_made(options, stats, units)
  if intra_patch_loop(model):  # passes after the first, which is in propose
    calls['propose_step'] = (stats['decoder_row_passes'] - stats['decoder_rows']) / units
  parts = {name: per_call[name] * calls[name] for name in per_call}
  parts['prompt_entropy'] = prompt_flops
  return dict(parts, total=sum(parts.values()))

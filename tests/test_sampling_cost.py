"""A sampler's FLOPs equal the sum over the calls it reports making: each
component counted once (bltdiff.sampling_cost) times the run's own counts,
against the whole compiled sampler counted by bltdiff.flops with the run's
trip count."""

import jax
import jax.numpy as jnp
import pytest

from bltdiff import entropy, flops, sampling_cost
from bltdiff.latent import sampling as latent_sampling, slot_gather
from bltdiff.latent.diffusion import LatentMDLM
from bltdiff.models import byte_ar, byte_mdlm
from bltdiff.sampling.options import SamplerOptions
from configs import common
from conftest import TINY_LATENT_MODEL

LENGTH, ROWS = 48, 3


def latent_model():
  model = LatentMDLM(common.latent_model(**TINY_LATENT_MODEL),
                     common.patching_config(mode='space', max_patch_len=6, num_slots=12))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, LENGTH), jnp.int32)})
  return model, params


@pytest.mark.parametrize('options', [
    SamplerOptions(sampler='adaptive', steps=8, adaptive_alpha=0.05),
    SamplerOptions(sampler='confidence', steps=8, confidence_threshold=0.5),
    SamplerOptions(sampler='ancestral', steps=2),  # 2 steps over many slots: both reveal
])
def test_latent_sampler_flops_are_the_sum_of_its_calls(options, monkeypatch):
  """With slot gathering off (every revealing step decodes and encodes all rows,
  and each decoder pass runs on all of them: what flops.count's max over the
  branches assumes), the run's accounting equals the compiled sampler's count,
  but for the branches a run does not take: the first step's reuse of the
  plan's prediction and the prompt encoding of an unprompted run (one predict
  and one full encoder pass). The `ar` decoder's loop of positions after the
  first runs a different count each step: its mean is the count it is given."""
  monkeypatch.setattr(slot_gather, 'LADDER_HALVINGS', 0)
  monkeypatch.setattr(slot_gather, 'NESTED_LADDER_HALVINGS', 0)
  model, params = latent_model()
  _, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=ROWS,
                          length=LENGTH)
  assert stats['proposals'] == stats['steps']  # every step drew
  cost = sampling_cost.run_flops(model, params, options, stats, ROWS, LENGTH)
  per_call = sampling_cost.callback_flops(model, params, 1.0, ROWS, LENGTH)
  run = latent_sampling.compiled_sampler(model, options, True)
  _, state = model.sampler_adapter(params, options.top_p, ROWS, LENGTH)
  with jax.enable_x64(True):
    units = ROWS * model.patch_config.num_slots
    positions = (stats['decoder_row_passes'] - stats['decoder_rows']) / units  # after the first
    # While loops depth first: the sampler's (a fixed step count is a scan, no
    # entry), then the decoder's inside its propose.
    outer = () if options.sampler == 'ancestral' else (stats['steps'],)
    whole = flops.count(run, params, jax.random.PRNGKey(0), state,
                        while_trips=outer + (positions / stats['proposals'],))
  slack = per_call['predict'] + per_call['commit']
  assert cost['total'] <= whole <= 1.03 * cost['total'] + slack, (cost, whole, slack)
  extra = cost['entropy_scores'] + cost['confidence_scores'] + cost['remaining_entropy']
  assert (extra > 0) == (options.sampler in ('adaptive', 'confidence'))


def test_gathering_is_what_the_accounting_counts():
  """With gathering, decoder and encoder FLOPs follow the rows they ran on."""
  model, params = latent_model()
  options = SamplerOptions(sampler='cached', steps=8)
  _, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=ROWS,
                          length=LENGTH)
  cost = sampling_cost.run_flops(model, params, options, stats, ROWS, LENGTH)
  per_call = sampling_cost.callback_flops(model, params, 1.0, ROWS, LENGTH)
  units = ROWS * model.patch_config.num_slots
  assert cost['propose'] == pytest.approx(per_call['propose'] * stats['decoder_rows'] / units)
  assert stats['decoder_rows'] < units * stats['proposals']  # fewer than every row each time


def test_byte_mdlm_sampler_flops_are_the_sum_of_its_calls():
  model = byte_mdlm.ByteMDLM(common.byte_model('byte_mdlm', dim=32, num_layers=1, num_heads=2,
                                               mlp_dim=64))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, 24), jnp.int32)})
  options = SamplerOptions(sampler='adaptive', steps=10, adaptive_alpha=0.3)
  _, stats = model.sample(params, jax.random.PRNGKey(1), options, num_samples=ROWS, length=24)
  cost = sampling_cost.run_flops(model, params, options, stats, ROWS, 24)
  _, z = model.sampler_adapter(params, 1.0, ROWS, 24)
  run = byte_mdlm.compiled_sampler(model, options)
  with jax.enable_x64(True):
    whole = flops.count(run, params, jax.random.PRNGKey(1), z, while_trips=stats['steps'])
  # Slack: the first step reuses the plan's prediction (a branch count does not take).
  one_call = cost['predict'] / stats['latent_calls']
  assert cost['total'] <= whole <= 1.03 * cost['total'] + one_call, (cost, whole)


def test_byte_ar_flops_are_its_decode_steps():
  model = byte_ar.ByteARModel(common.byte_model('byte_ar', dim=32, num_layers=2, num_heads=2,
                                                mlp_dim=64))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, 24), jnp.int32)})
  options = SamplerOptions(sampler='cached')
  _, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=ROWS, length=24)
  cost = sampling_cost.run_flops(model, params, options, stats, ROWS, 24)
  run = byte_ar.compiled_sampler(model, ROWS, 24, 0, True, 1.0)
  with jax.enable_x64(True):
    whole = flops.count(run, params, jax.random.PRNGKey(0), jnp.zeros((0,), jnp.int32))
  assert cost['total'] <= whole <= 1.05 * cost['total'], (cost, whole)


def test_entropy_model_flops_on_a_prompt():
  module = byte_ar.make_byte_ar(common.byte_model('byte_ar', dim=32, num_layers=1,
                                                  num_heads=2, mlp_dim=64))
  params = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
  scorer = entropy.entropy_model_from_module(module, params, chunk_len=16, batch_size=2)
  one_batch = flops.count(lambda p, t: entropy.entropy_from_logits(module.apply({'params': p}, t)),
                          params, jnp.zeros((2, 16), jnp.int32))
  # 40 bytes in chunks of 16 with overlap 8: 4 chunk rows -> 2 batches of 2.
  assert len(entropy.plan_chunks(40, 16, 8)) == 4
  assert scorer.scoring_flops([40]) == pytest.approx(2 * one_batch)
  assert scorer.scoring_flops([]) == 0

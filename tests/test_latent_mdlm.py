"""Latent MDLM: no leak from masked patches, a valid bound, the decoders'
probabilities, padding slots, and a tiny end-to-end run through the trainer."""

import glob
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bltdiff import vocab
from bltdiff.latent import local_decoder
from bltdiff.latent.diffusion import LatentMDLM, mask_slots
from configs import common
from conftest import TINY_LATENT_MODEL

L = 4  # max_patch_len of the tiny models


def tiny_model_config(decoder_mode='ar', **overrides):
  return common.latent_model(**dict(TINY_LATENT_MODEL, decoder_mode=decoder_mode, **overrides))


def init_params(model, tokens, seed=0):
  return nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(seed), {'tokens': tokens}))


def tiny_patching(mode='static', num_slots=6, **overrides):
  return dict(dict(mode=mode, threshold=1.5, monotonic_threshold=0.0, reset_on_newline=False,
                   static_size=2, max_patch_len=L, num_slots=num_slots), **overrides)


@pytest.fixture(scope='module', params=['ar', 'parallel'])
def model_and_params(request):
  model = LatentMDLM(tiny_model_config(request.param), tiny_patching())
  params = init_params(model, np.zeros((1, 12), np.int32))
  return model, params


def random_patches(seed, batch=2, slots=6, real=5):
  """patch bytes [b, slots, L] (PAD filler), lengths [b, slots], slot_mask [b, slots]."""
  rng = np.random.RandomState(seed)
  lengths = rng.randint(1, L + 1, (batch, slots)) * (np.arange(slots) < real)
  tokens = rng.randint(0, vocab.NUM_DATA_SYMBOLS, (batch, slots, L))
  tokens = np.where(np.arange(L) < lengths[..., None], tokens, vocab.PAD)
  return jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths, jnp.int32), jnp.asarray(lengths > 0)


def test_no_leak_from_masked_patch(model_and_params):
  """Changing a masked patch's bytes AND length changes no latent of any slot
  and no decoder prediction of any other slot (E, T and D together)."""
  model, params = model_and_params
  tokens, lengths, slot_mask = random_patches(0)
  masked = jnp.zeros_like(slot_mask).at[:, 2].set(True).at[0, 4].set(True)
  changed_tokens = tokens.at[:, 2].set(jnp.array([7, vocab.PAD, vocab.PAD, vocab.PAD]))
  changed_lengths = lengths.at[:, 2].set(1)
  changed_tokens = changed_tokens.at[0, 4].set(jnp.array([1, 2, 3, 4]))
  changed_lengths = changed_lengths.at[0, 4].set(L)

  @jax.jit
  def outputs(tok, lens):
    visible = slot_mask & ~masked
    cond = model.denoise(params, tok, visible, slot_mask)
    # D's predictions for every slot, teacher-forced on the ORIGINAL bytes, so
    # only what flows through the latents can differ.
    lp, _, _ = model.patch_log_prob(params, cond, tokens, lengths)
    return cond, lp

  cond_a, lp_a = outputs(tokens, lengths)
  cond_b, lp_b = outputs(changed_tokens, changed_lengths)
  np.testing.assert_array_equal(np.asarray(cond_a), np.asarray(cond_b))
  np.testing.assert_array_equal(np.asarray(lp_a), np.asarray(lp_b))
  # Sanity: the same change to a VISIBLE patch does move other slots' latents.
  cond_c, _ = outputs(tokens.at[:, 1].set(changed_tokens[:, 2]), lengths.at[:, 1].set(1))
  assert not np.allclose(np.asarray(cond_a[:, 0]), np.asarray(cond_c[:, 0]))


def test_padding_slots_contribute_nothing(model_and_params):
  """Extra padding slots change no real slot's loss term and add zero terms."""
  model, params = model_and_params
  tokens, lengths, slot_mask = random_patches(1, slots=6, real=4)
  masked = jnp.zeros_like(slot_mask).at[:, 1].set(True).at[:, 3].set(True)
  slot_nll = jax.jit(lambda *a: model.slot_nll(params, *a)[0])
  nll = slot_nll(tokens, lengths, slot_mask, masked)
  assert np.all(np.asarray(nll)[:, 4:] == 0.0)  # padding slots are never masked
  # Real slots' terms do not depend on how many padding slots follow.
  short = lambda x: x[:, :4]
  nll_short = slot_nll(short(tokens), short(lengths), short(slot_mask), short(masked))
  np.testing.assert_allclose(np.asarray(nll)[:, :4], np.asarray(nll_short), rtol=1e-5,
                             atol=1e-5)
  # The forward process never masks a padding slot.
  m = mask_slots(jax.random.PRNGKey(0), slot_mask, jnp.zeros((2,)))
  assert not np.any(np.asarray(m)[:, 4:]) and np.all(np.asarray(m)[:, :4])


def test_ar_log_probs_match_step_by_step():
  model = LatentMDLM(tiny_model_config('ar'), tiny_patching())
  params = init_params(model, np.zeros((1, 12), np.int32), seed=3)
  tokens, lengths, slot_mask = random_patches(2, batch=1, slots=6, real=6)
  rows, lens = tokens[0], lengths[0]
  cond = jax.random.normal(jax.random.PRNGKey(4), (rows.shape[0], 16))
  apply = jax.jit(lambda inputs: model.ar_decoder_log_probs(params, cond, inputs))
  teacher, _, _ = local_decoder.ar_patch_log_prob(apply(local_decoder.ar_inputs(rows)), rows, lens)
  targets = np.asarray(local_decoder.ar_targets(rows, lens))
  stepwise = np.zeros(rows.shape[0])
  for j in range(L + 1):  # rerun on the prefix alone: inputs past j hold PAD
    inputs = np.full((rows.shape[0], L + 1), vocab.PAD, np.int32)
    inputs[:, 0] = local_decoder.START
    inputs[:, 1:j + 1] = np.asarray(rows)[:, :j]
    lp = np.asarray(apply(jnp.asarray(inputs)))[:, j]
    for r in range(rows.shape[0]):
      if j <= lens[r]:
        stepwise[r] += lp[r, targets[r, j]]
  np.testing.assert_allclose(np.asarray(teacher), stepwise, rtol=1e-5, atol=1e-5)
  # Normalization over every patch of length 1..2 for a 2-symbol... checked via
  # the constraints instead: position 0 cannot end, position L must end.
  lp_all = np.asarray(apply(local_decoder.ar_inputs(rows)))
  assert np.all(lp_all[:, 0, vocab.END_OF_PATCH] < -1e20)
  np.testing.assert_allclose(lp_all[:, L, vocab.END_OF_PATCH], 0.0, atol=1e-6)
  assert np.all(lp_all[..., vocab.MASK] < -1e20)


def test_sampled_patches_end_and_lengths(model_and_params):
  """Decoder draws: lengths in 1..L, bytes before the end, PAD after it."""
  model, params = model_and_params
  cond = 3.0 * jax.random.normal(jax.random.PRNGKey(5), (4, 16, 16))
  with jax.enable_x64(True):
    out, lengths = jax.jit(lambda p, k, c: model.propose(p, k, c))(params, jax.random.PRNGKey(6),
                                                                   cond)
  out, lengths = np.asarray(out), np.asarray(lengths)
  assert lengths.min() >= 1 and lengths.max() <= L
  inside = np.arange(L) < lengths[..., None]
  assert np.all(out[inside] < vocab.NUM_DATA_SYMBOLS)
  assert np.all(out[~inside] == vocab.PAD)


def toy_data(rng, rows):
  """Rows of 2 static patches of 2 bytes, each patch iid from a fixed
  distribution over 4 patches. Exact NLL = 2·H(q) nats per row."""
  patches = np.array([[97, 98], [99, 99], [97, 32], [10, 120]], np.int32)
  q = np.array([0.5, 0.25, 0.15, 0.10])
  idx = rng.choice(4, size=(rows, 2), p=q)
  return patches[idx].reshape(rows, 4), float(-2 * np.sum(q * np.log(q)))


def test_bound_above_exact_nll_on_toy_patches():
  model = LatentMDLM(tiny_model_config('ar'),
                     tiny_patching(num_slots=2, static_size=2, max_patch_len=2))
  rng = np.random.RandomState(0)
  train_x, exact = toy_data(rng, 64)
  params = init_params(model, train_x)
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, key):
    grads = jax.grad(lambda p: model.loss(p, {'tokens': train_x}, key)[0])(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt

  for i in range(30):
    params, opt = step(params, opt, jax.random.PRNGKey(i))
  eval_x, _ = toy_data(np.random.RandomState(1), 256)
  per_row = jax.jit(lambda p, k: model.loss(p, {'tokens': eval_x}, k, train=False)[0])
  draws = np.array([float(per_row(params, jax.random.PRNGKey(100 + r))) for r in range(8)])
  bound = draws.mean() * 4  # nats per row
  stderr = draws.std() * 4 / math.sqrt(len(draws))
  # The learning got somewhere (well under uniform bytes), yet stays above the truth.
  assert bound < 0.5 * 4 * math.log(257)
  assert bound >= exact - 3 * stderr - 0.02, (bound, exact, stderr)


def test_end_to_end_train_writes_samples(make_latent_config, tmp_path):
  from bltdiff import commands
  config = make_latent_config(**{'data.seq_len': 32, 'train.num_steps': 3,
                                 'train.sample_every': 3, 'train.eval_every': 3,
                                 'train.checkpoint_every': 3, 'sample.steps': 4,
                                 'sample.sampler': 'cached', 'model.decoder_mode': 'parallel',
                                 'patching.mode': 'space', 'patching.num_slots': 16,
                                 'patching.max_patch_len': 8})
  commands.train(config, str(tmp_path))
  samples = glob.glob(str(tmp_path / 'samples' / '*.npy'))
  assert samples
  tokens = np.load(samples[0])
  assert tokens.shape[0] == 2 and tokens.shape[1] > 0
  for row in tokens:  # generated symbols, then PAD where a shorter sample ended
    n = int(np.sum(row != vocab.PAD))
    assert n > 0 and np.all(row[n:] == vocab.PAD)
    assert np.all((row[:n] >= 0) & (row[:n] < vocab.NUM_DATA_SYMBOLS))

"""Latent sampling as cheap as the method allows, with the same draws: the
cached local decoder, decoding and encoding only the revealed slots, and the
samplers that read the decoder's entropy and confidence."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bltdiff import commands, vocab
from bltdiff.latent import local_decoder, sampling as latent_sampling, slot_gather
from bltdiff.latent.diffusion import LatentMDLM
from bltdiff.latent.network import LatentDenoiser
from bltdiff.sampling import categorical
from bltdiff.sampling.options import SamplerOptions
from bltdiff.training import restore

LENGTH = 64


def two_kind_corpus(directory) -> str:
  """Documents of two kinds: one sentence repeated (easy once seen) and random
  lowercase words (hard)."""
  rng = np.random.RandomState(0)
  os.makedirs(directory, exist_ok=True)
  for i in range(60):
    if i % 2:
      text = 'the cat sat on the mat. ' * 12
    else:
      text = ' '.join(''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), rng.randint(2, 7)))
                      for _ in range(50))
    with open(os.path.join(directory, f'doc{i:03d}.txt'), 'w') as f:
      f.write(text)
  return os.path.join(directory, '*.txt')


def tiny_model_config(corpus, mode, steps):
  from conftest import tiny_latent_config
  return tiny_latent_config(corpus, **{
      'model.decoder_mode': mode, 'data.seq_len': LENGTH, 'patching.mode': 'space',
      'patching.max_patch_len': 8, 'patching.num_slots': 24, 'train.num_steps': steps,
      'train.learning_rate': 3e-3, 'train.warmup_steps': 6, 'train.log_every': steps,
      'train.checkpoint_every': steps})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """{'ar': (model, params) of a tiny latent MDLM (space patching) trained on
  the two-kind corpus, 'parallel': an initialised one (draws are compared
  draw for draw, which needs no training)}."""
  corpus = two_kind_corpus(str(tmp_path_factory.mktemp('two_kinds')))
  workdir = str(tmp_path_factory.mktemp('latent_ar'))
  commands.train(tiny_model_config(corpus, 'ar', 300), workdir)
  loaded = restore.load_for_inference(workdir)
  config = tiny_model_config(corpus, 'parallel', 1)
  model = LatentMDLM(config.model, config.patching)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), {'tokens': jnp.zeros((1, LENGTH), jnp.int32)})
  return {'ar': (loaded.model, loaded.params), 'parallel': (model, params)}


def latents(model, params, text=b'the cat sat on the mat. qxe bfl zmoa tpw kr yvdhj cuio ' * 2):
  tokens = np.frombuffer(text[:LENGTH], np.uint8).astype(np.int32)[None]
  patches, pt = model.patchify(tokens)
  masked = jnp.zeros_like(patches.slot_mask).at[0, 1::2].set(True) & patches.slot_mask
  cond = model.denoise(params, pt, patches.slot_mask & ~masked, patches.slot_mask)
  return cond.reshape(-1, cond.shape[-1])


def test_cached_ar_draws_are_the_teacher_forced_decoders_draws(trained):
  """Each drawn symbol is the inverted CDF of p(. | drawn prefix) at the step's
  uniform under the full teacher-forced decoder: what the uncached sampler drew."""
  model, params = trained['ar']
  cond = latents(model, params)
  key = jax.random.PRNGKey(3)
  with jax.enable_x64(True):
    out, lengths, _ = jax.jit(lambda p, k, c: model.decoder.draw(p, k, c))(params, key, cond)
    lp = model.ar_decoder_log_probs(params, cond, local_decoder.ar_inputs(out))
    rows, L = out.shape
    for j in range(L + 1):
      u = np.asarray(categorical.row_uniform(jax.random.fold_in(key, j), (rows,),
                                             jnp.arange(rows)))  # each row's own key
      cdf = np.cumsum(np.exp(np.asarray(lp[:, j], np.float64)), -1)
      expected = np.sum(cdf < u[:, None] * cdf[:, -1:], -1)
      for r in range(rows):
        if j < lengths[r]:
          assert expected[r] == out[r, j], (r, j)
        elif j == lengths[r]:
          assert expected[r] == vocab.END_OF_PATCH, (r, j)
  assert 1 <= lengths.min() and lengths.max() <= L and len(set(np.asarray(lengths))) > 1


@pytest.mark.parametrize('mode', ['ar', 'parallel'])
def test_greedy_patch_is_the_argmax_path_with_its_mean_log_prob(trained, mode):
  """The confidence score: the greedy patch takes the most likely symbol at
  every decision of the teacher-forced decoder, and its score is that patch's
  log-probability over its len + 1 decisions."""
  model, params = trained[mode]
  cond = latents(model, params)
  out, lengths, score = jax.jit(lambda p, c: model.decoder.greedy(p, c))(params, cond)
  total, hits, valid = model.net.apply({'params': params}, cond[None], out[None], lengths[None],
                                       method=LatentDenoiser.patch_log_prob)
  assert np.all(np.asarray(hits) == np.asarray(valid))  # argmax wherever the patch runs
  np.testing.assert_allclose(np.asarray(score), np.asarray(total[0]) / (np.asarray(lengths) + 1),
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(score) <= 0.0)


@pytest.mark.parametrize('mode', ['ar', 'parallel'])
def test_gathered_draws_equal_the_whole_batch_draws(trained, mode):
  model, params = trained[mode]
  cond = latents(model, params)
  n = cond.shape[0]
  reveal = jnp.asarray(np.random.RandomState(0).rand(n) < 0.2)
  with jax.enable_x64(True):
    whole, whole_len, _ = model.decoder.draw(params, jax.random.PRNGKey(1), cond)
    drawn = model.decoder.draw_revealed(params, jax.random.PRNGKey(1), cond, reveal)
    some, some_len, decoded = drawn['tokens'], drawn['lengths'], drawn['decoded']
  r = np.asarray(reveal)
  np.testing.assert_array_equal(np.asarray(some)[r], np.asarray(whole)[r])
  np.testing.assert_array_equal(np.asarray(some_len)[r], np.asarray(whole_len)[r])
  assert np.all(np.asarray(some)[~r] == vocab.PAD)
  # The smallest buffer of the ladder that holds the revealed rows.
  assert int(decoded) == min(c for c in slot_gather.capacities(n) if c >= r.sum())
  assert int(decoded) < n


def test_ar_draws_stop_once_every_patch_has_ended(trained):
  """`ar` runs position 0 on the whole buffer, then each position on the rows
  still decoding only (the smallest buffer of the ladder that holds them), and
  stops after the longest patch's end: a patch costs len + 1 positions."""
  model, params = trained['ar']
  cond = latents(model, params)
  n, L = cond.shape[0], model.patch_config.max_patch_len
  reveal = jnp.asarray(np.random.RandomState(1).rand(n) < 0.6)
  with jax.enable_x64(True):
    drawn = jax.jit(lambda k: model.decoder.draw_revealed(params, k, cond, reveal))(
        jax.random.PRNGKey(4))
  r = np.asarray(reveal)
  lengths, steps = np.asarray(drawn['lengths']), np.asarray(drawn['steps'])
  np.testing.assert_array_equal(steps, np.where(r, lengths + 1, 0))
  assert int(drawn['passes']) == steps.max() < L + 1  # key 4: a draw where none runs to L
  assert len(set(lengths[r])) > 1
  buffer = int(drawn['decoded'])
  ladder = slot_gather.capacities(buffer, slot_gather.NESTED_LADDER_HALVINGS)
  running = [int(np.sum(steps > j)) for j in range(1, steps.max())]  # rows at position j
  assert int(drawn['row_passes']) == buffer + sum(min(c for c in ladder if c >= count)
                                                  for count in running)
  assert int(drawn['row_passes']) < buffer * steps.max()


def test_map_selected_runs_nothing_when_nothing_is_selected():
  out, rows = slot_gather.map_selected(lambda x, i: x * 2, jnp.arange(8.0), jnp.zeros(8, bool),
                                       -1.0)
  assert int(rows) == 0 and np.all(np.asarray(out) == -1.0)
  out, rows = slot_gather.map_selected(lambda x, i: x * 2, jnp.arange(8.0),
                                       jnp.arange(8) % 3 == 0, -1.0)
  np.testing.assert_array_equal(np.asarray(out), [0, -1, -1, 6, -1, -1, 12, -1])
  assert int(rows) == 4  # 3 rows selected: the ladder of 8 is 1, 2, 4, 8 (halvings down to 8/16 < 1 stop at 1)


@pytest.mark.parametrize('sampler', ['cached', 'adaptive'])
def test_gathering_changes_no_sample(trained, sampler, monkeypatch):
  """The sampler with slot gathering gives the same bytes as with every row
  decoded and encoded at every step, and decodes fewer rows."""
  model, params = trained['ar']
  options = SamplerOptions(sampler=sampler, steps=8, adaptive_alpha=0.05, min_steps=2)
  key = jax.random.PRNGKey(5)
  gathered, g_stats = model.sample(params, key, options, num_samples=3, length=LENGTH)
  monkeypatch.setattr(slot_gather, 'LADDER_HALVINGS', 0)  # buffers: all rows only
  fresh = LatentMDLM(model.config, model.patch_config)  # not the cached compilation
  whole, w_stats = fresh.sample(params, key, options, num_samples=3, length=LENGTH)
  np.testing.assert_array_equal(gathered, whole)
  assert g_stats['decoder_rows'] < w_stats['decoder_rows']
  assert g_stats['encoder_rows'] < w_stats['encoder_rows']


def test_kept_encodings_give_the_denoisers_prediction(trained):
  model, params = trained['ar']
  tokens = np.frombuffer(b'the model of the patch is a byte model. ' * 2, np.uint8)[None, :LENGTH]
  patches, pt = model.patchify(tokens.astype(np.int32))
  visible = patches.slot_mask & (jnp.arange(patches.slot_mask.shape[1]) % 3 != 1)
  enc, _ = latent_sampling.encode_revealed(model, params, pt, visible,
                                           jnp.zeros(pt.shape[:2] + (model.config.dim,)))
  kept = model.contextualize(params, enc, visible, patches.slot_mask)
  direct = model.denoise(params, pt, visible, patches.slot_mask)
  np.testing.assert_allclose(np.asarray(kept), np.asarray(direct), rtol=1e-5, atol=1e-5)


def test_adaptive_takes_fewer_steps_on_easy_text(trained):
  """The planned step count follows the model's entropy: after the repeated
  sentence the rest is predictable; after random words it is not."""
  model, params = trained['ar']
  options = SamplerOptions(sampler='adaptive', steps=64, adaptive_alpha=0.04, min_steps=1)
  easy = np.frombuffer(b'the cat sat on the mat. the cat', np.uint8).astype(np.int32)
  hard = np.frombuffer(b'qxe bfl zmoa tpw kr yvdhj cuio', np.uint8).astype(np.int32)
  steps = {}
  for name, prompt in (('easy', easy), ('hard', hard)):
    _, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=8,
                            length=LENGTH, prefix=prompt, gap_slots=8)
    steps[name] = stats['steps_taken']
  assert steps['easy'] < steps['hard'], steps


def test_confidence_sampler_keeps_patch_sizes(trained):
  """The confidence score is not biased to short patches: samples' bytes per
  patch stay near the data's (a collapse shows up as ~1-byte patches)."""
  model, params = trained['ar']
  options = SamplerOptions(sampler='confidence', steps=24, confidence_threshold=0.5, min_steps=2)
  tokens, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=8,
                               length=LENGTH)
  sampled = stats['mean_bytes'] / stats['mean_patches']
  data = np.frombuffer(b'the cat sat on the mat. qxe bfl zmoa tpw kr yvdhj cuio ' * 2,
                       np.uint8)[None, :LENGTH].astype(np.int32)
  patches, _ = model.patchify(data)
  data_bytes_per_patch = LENGTH / float(jnp.sum(patches.slot_mask))
  assert sampled > 0.6 * data_bytes_per_patch, (sampled, data_bytes_per_patch)


def test_confidence_threshold_sets_the_pace(trained):
  """A lower threshold reveals more slots per step (fewer steps), a high one
  about one per step; the score is deterministic, so the same key and
  threshold give the same samples."""
  model, params = trained['ar']
  steps = {}
  for threshold in (0.3, 0.99):
    options = SamplerOptions(sampler='confidence', steps=24, confidence_threshold=threshold,
                             min_steps=1)
    tokens, stats = model.sample(params, jax.random.PRNGKey(0), options, num_samples=8,
                                 length=LENGTH, gap_slots=12)
    again, _ = model.sample(params, jax.random.PRNGKey(0), options, num_samples=8,
                            length=LENGTH, gap_slots=12)
    np.testing.assert_array_equal(tokens, again)
    steps[threshold] = stats['steps_taken']
  assert steps[0.3] < 0.6 * steps[0.99], steps
  assert steps[0.99] > 6, steps


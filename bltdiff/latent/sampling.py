"""Sampling latent MDLM over patch slots: the registry's samplers through
`SlotAdapter`, with prompts and infilling.

The sampler state is a dict of patch slots:
  tokens    int32 [b, P, L]   bytes of visible slots (PAD elsewhere)
  lengths   int32 [b, P]      their lengths (0 for masked / padding)
  masked    bool  [b, P]      still to generate
  slot_mask bool  [b, P]      slots in use (prompt + gap + suffix)
  enc       float [b, P, D]   the local encoder's output of every visible slot
  decoder_rows, encoder_rows  int32 []: slot rows the decoder / encoder ran on
  decoder_passes      int32 []: Σ over decoded patches of the sequential decoder
                      passes each needed (`ar` its len + 1 symbols, `parallel` 1,
                      `diffusion` T_steps(p), fewer once complete)
  decoder_row_passes  int32 []: Σ over decoder calls of the rows each pass ran on
                      (`parallel`: the buffer's rows; `ar`, `diffusion`: the
                      buffer once, then each pass's buffer of rows still decoding)

One step = one latent-network call and the local decoder on the slots it
reveals. The local encoder sees each patch alone, so a slot is encoded once,
when it becomes visible, and its encoding kept: a step's network call is the
latent transformer over the kept encodings (masked slots get the mask
vector), the same numbers `denoise` computes. The decoder and the encoder run
only on the revealed slots' rows (`slot_gather`).

Scores: the adaptive sampler plans each row's step count from the decoder's
estimate of the entropy of every masked patch (summed along one draw of the
whole patch; `decoding`) and ranks slots by the entropy of their first
symbol; the confidence sampler reveals the masked slots whose greedy patch
(D's most likely symbol at every position) has a mean probability per symbol
above the threshold — a score of the prediction, not of one random draw, and
per symbol, so no preference for short patches. Its first version scored the
first symbol alone, which never passed 0.5 on trained models: a patch starts
where the entropy model is unsure, so every step revealed one slot.

Prompts: the given bytes are patched with the run's own patcher (the entropy
model for entropy modes) and stay visible as slots; generated slots follow. The
prompt's last patch is taken as complete (the patcher cannot know what follows).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import patching, vocab
from bltdiff.errors import ConfigError
from bltdiff.latent import slot_gather
from bltdiff.latent.intra_patch import EXACT_INTRA_PATCH, IntraPatchRule
from bltdiff.sampling import categorical, loops, registry
from bltdiff.sampling.options import SamplerOptions

COUNTERS = ('decoder_rows', 'encoder_rows', 'decoder_passes', 'decoder_row_passes')


def intra_patch_rule(options: SamplerOptions) -> IntraPatchRule:
  """The `diffusion` decoder's step rule of a run's options."""
  return IntraPatchRule(options.intra_alpha, options.intra_min_steps, options.intra_speculative)


@dataclasses.dataclass(frozen=True)
class SlotAdapter(registry.ModelAdapter):
  """The sampler's view of latent MDLM (`bltdiff.sampling.registry.Adapter`):
  a prediction is the decoder conditions [b, P, D_dec], a proposal the drawn
  patches of the revealed slots. intra_patch: the `diffusion` decoder's rule."""
  intra_patch: IntraPatchRule = EXACT_INTRA_PATCH

  def predict(self, st):
    visible = st['slot_mask'] & ~st['masked']
    return self.model.contextualize(self.params, st['enc'], visible, st['slot_mask'])

  def propose(self, key, cond, st, unmask):
    b, p, d = cond.shape
    drawn = self.model.decoder.draw_revealed(self.params, key, cond.reshape(b * p, d),
                                             unmask.reshape(-1), self.top_p, self.intra_patch)
    return dict(drawn, tokens=drawn['tokens'].reshape(b, p, -1),
                lengths=drawn['lengths'].reshape(b, p))

  def commit(self, st, proposal, unmask):
    tokens = jnp.where(unmask[..., None], proposal['tokens'], st['tokens'])
    enc, encoded = encode_revealed(self.model, self.params, tokens, unmask, st['enc'])
    return dict(st, tokens=tokens, enc=enc,
                lengths=jnp.where(unmask, proposal['lengths'], st['lengths']),
                masked=st['masked'] & ~unmask,
                decoder_rows=st['decoder_rows'] + proposal['decoded'],
                decoder_passes=st['decoder_passes'] + jnp.sum(proposal['steps'], dtype=jnp.int32),
                decoder_row_passes=st['decoder_row_passes'] + proposal['row_passes'],
                encoder_rows=st['encoder_rows'] + encoded)

  def masked(self, st):
    return st['masked']

  def _first_symbol(self, cond):
    return self.model.first_symbol_log_probs(self.params, cond)

  def entropy_scores(self, cond, st):
    """Entropy (nats) of each slot's first decoded symbol [b, P]."""
    return categorical.entropy_of(self._first_symbol(cond))

  def confidence_scores(self, cond, st):
    """Mean log-probability per symbol of each masked slot's greedy patch
    [b, P] (`decoding.PatchDecoder.greedy`; -inf elsewhere). D runs on the
    masked slots' rows only; cost accounting counts all rows (an upper bound)."""
    b, p, d = cond.shape
    score_rows = lambda rows, index: self.model.decoder.greedy(self.params, rows)[2]
    score, _ = slot_gather.map_selected(score_rows, cond.reshape(b * p, d),
                                        st['masked'].reshape(-1), -jnp.inf)
    return score.reshape(b, p)

  def remaining_entropy(self, cond, st):
    """Σ over masked slots of the decoder's estimate of the patch's entropy [b]."""
    b, p, d = cond.shape
    entropy = self.model.decoder.entropy_estimate(self.params, cond.reshape(b * p, d))
    return jnp.sum(jnp.where(st['masked'], entropy.reshape(b, p), 0.0), axis=-1)


def encode_revealed(model, params, tokens, reveal, enc):
  """enc [b, P, D] with the slots in reveal [b, P] (re)encoded from tokens
  [b, P, L]: the encoder runs on those rows only. Returns (enc, rows encoded)."""
  b, p, L = tokens.shape
  encode_rows = lambda rows, index: model.encode_patches(params, rows[None])[0].astype(enc.dtype)
  new, encoded = slot_gather.map_selected(encode_rows, tokens.reshape(b * p, L),
                                          reveal.reshape(-1), 0.0)
  return jnp.where(reveal[..., None], new.reshape(enc.shape), enc), encoded


def initial_state(num_samples: int, num_slots: int, max_patch_len: int, enc_dim: int,
                  prefix=None, suffix=None, gap_slots=None, enc_dtype=np.float32):
  """The numpy state [num_samples, ...] of a template: prefix slots, `gap_slots`
  masked slots (or, with gap_slots=None, all remaining slots as candidates:
  the sampler then draws the total count from p(S)), then suffix slots.
  Encodings (enc_dim wide) are filled in by the sampler.

  prefix / suffix: (patch bytes [k, L], lengths [k]) or None."""
  L = max_patch_len
  tokens = np.full((num_slots, L), vocab.PAD, np.int32)
  lengths = np.zeros((num_slots,), np.int32)
  masked = np.zeros((num_slots,), bool)
  slot_mask = np.zeros((num_slots,), bool)
  k = 0 if prefix is None else len(prefix[1])
  m = 0 if suffix is None else len(suffix[1])
  gap = num_slots - k - m if gap_slots is None else gap_slots
  if gap <= 0 or k + gap + m > num_slots:
    raise ConfigError(f'prompt: {k} prompt and {m} suffix patches leave no room for a gap of '
                      f'{gap} slots among the {num_slots} slots (patching.num_slots)')
  if k:
    tokens[:k], lengths[:k] = prefix
  if m:
    tokens[k + gap:k + gap + m], lengths[k + gap:k + gap + m] = suffix
  masked[k:k + gap] = True
  slot_mask[:k + gap + m] = True
  tile = lambda x: np.broadcast_to(x, (num_samples,) + x.shape).copy()
  return dict(tokens=tile(tokens), lengths=tile(lengths), masked=tile(masked),
              slot_mask=tile(slot_mask), enc=np.zeros((num_samples, num_slots, enc_dim), enc_dtype),
              **{name: np.int32(0) for name in COUNTERS})


# Compiled samplers kept: each maps its kernels into the process (~3k memory maps
# for a `diffusion` decoder's), and Linux allows 65530 maps a process, so 32 of
# them crashed a sweep in LLVM ("Cannot allocate memory").
@functools.lru_cache(maxsize=8)
def compiled_sampler(model, options: SamplerOptions, draw_count: bool):
  """A jitted (params, key, state) -> (state, SamplerStats). With draw_count,
  the number of generated slots comes from p(S) (conditioned on leaving at least
  one slot after the prompt); otherwise the template's gap is used as given."""
  P = model.patch_config.num_slots
  if options.intra_speculative and model.decoder_mode != 'diffusion':
    raise ConfigError('sample.intra_patch.speculative: only the diffusion decoder has '
                      f'intra-patch passes (decoder_mode={model.decoder_mode!r})')

  @jax.jit
  def run(params, key, state):
    count_key, key = jax.random.split(key)
    if draw_count:
      # p(S | S > prompt slots): the prompt already fills the first k slots.
      k = jnp.sum(state['slot_mask'] & ~state['masked'], axis=-1)
      allowed = jnp.arange(P + 1)[None, :] > k[:, None]
      lp = jnp.where(allowed, model.count_log_probs(params)[None, :], -jnp.inf)
      count = categorical.gumbel_argmax(count_key, lp)
      in_use = jnp.arange(P)[None, :] < count[:, None]
      state = dict(state, masked=state['masked'] & in_use, slot_mask=state['slot_mask'] & in_use)
    visible = state['slot_mask'] & ~state['masked']  # the prompt's slots: encoded once, here
    enc, encoded = encode_revealed(model, params, state['tokens'], visible, state['enc'])
    state = dict(state, enc=enc, encoder_rows=state['encoder_rows'] + encoded)
    return registry.run(SlotAdapter(model, params, options.top_p, intra_patch_rule(options)),
                        key, state, options)

  return run


def counter_stats(state) -> dict:
  """The state's work counters (`COUNTERS`) as host ints."""
  return {name: int(state[name]) for name in COUNTERS}


def slots_to_tokens(state, length: int):
  """Final state -> byte rows [b, length] (PAD after each row's bytes) and the
  number of bytes of each row [b]. Bytes past `length` are cut."""
  lengths = jnp.where(state['slot_mask'], state['lengths'], 0)
  tokens = patching.unpatch_bytes(state['tokens'], lengths, length)
  totals = jnp.minimum(jnp.sum(lengths, -1), length)
  tokens = jnp.where(jnp.arange(length)[None, :] < totals[:, None], tokens, vocab.PAD)
  return np.asarray(tokens), np.asarray(totals)


def prompt_patches(model, data):
  """Byte array [n] -> (patch bytes [k, L], lengths [k]) with the model's
  patcher, or None. Entropy modes score the bytes with model.entropy_fn."""
  if data is None or len(data) == 0:
    return None
  data = np.asarray(data, np.int32)
  entropies = None
  if model.patch_config.mode in patching.ENTROPY_MODES:
    if model.entropy_fn is None:
      raise ConfigError('patching.entropy_model: prompts need the entropy model of the run')
    entropies = model.entropy_fn([bytes(data.astype(np.uint8).tolist())])[0][None]
  patches, pt = model.patchify(data[None], entropies)
  k = int(patches.num_patches[0])
  if int(patches.num_overflow_bytes[0]) or k >= model.patch_config.num_slots:
    raise ConfigError(f'prompt: {len(data)} bytes make {k} patches, too many for '
                      f'patching.num_slots={model.patch_config.num_slots}')
  return np.asarray(pt[0, :k]), np.asarray(patches.lengths[0, :k])


def sample(model, params, key, options: SamplerOptions, *, num_samples: int, length: int,
           prefix=None, suffix=None, num_slots=None, gap_slots=None):
  """Draws byte rows [num_samples, length] (BOUNDARY allowed; PAD after each
  row's generated bytes) and stats (latent_calls, steps, proposals, row_bytes).

  prefix / suffix: byte arrays kept visible (patched like the training data).
  The number of slots to generate is drawn from the learned p(S) given the
  prompt, unless gap_slots (or num_slots, the total) fixes it."""
  if options.sampler not in model.samplers:
    raise ConfigError(f'sample.sampler: latent_mdlm has samplers {model.samplers}, '
                      f'got {options.sampler!r}')
  P, L = model.patch_config.num_slots, model.patch_config.max_patch_len
  prefix_patches = prompt_patches(model, prefix)
  suffix_patches = prompt_patches(model, suffix)
  k = 0 if prefix_patches is None else len(prefix_patches[1])
  if gap_slots is None and num_slots is not None:
    gap_slots = int(num_slots) - k
  if suffix_patches is not None and gap_slots is None:
    raise ConfigError('--gap: infilling needs the gap size (bytes or slots)')
  state = initial_state(num_samples, P, L, model.config.dim, prefix_patches, suffix_patches,
                        gap_slots, jnp.dtype(model.config.dtype))
  run = compiled_sampler(model, options, gap_slots is None)
  state, stats = categorical.run_with_x64(run, params, key, jax.tree.map(jnp.asarray, state))
  tokens, totals = slots_to_tokens(state, length)
  return tokens, dict(loops.summarize(stats), **counter_stats(state),
                      mean_bytes=float(totals.mean()),
                      row_bytes=totals.tolist(),
                      mean_patches=float(np.mean(np.sum(np.asarray(state['slot_mask']), -1))))

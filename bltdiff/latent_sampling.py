"""Samplers of latent MDLM over patch slots: every sampler of `bltdiff.samplers`
(ancestral, cached, entropy-adaptive, confidence), with prompts and infilling.

The sampler state is a dict of patch slots:
  tokens    int32 [batch, slots, L]   bytes of visible slots (PAD elsewhere)
  lengths   int32 [batch, slots]      their lengths (0 for masked / padding)
  masked    bool  [batch, slots]      still to generate
  slot_mask bool  [batch, slots]      slots in use (prompt + gap + suffix)

One step = one latent-network call (`denoise`: local encoder + latent
transformer, the expensive part) and one draw of the local decoder for every
slot (cheap, and parallel across patches). The entropy-adaptive sampler ranks
masked slots by the entropy of the decoder's first symbol (first byte, or end
of patch): a patch starts at a high-entropy byte, so its first byte carries
most of its uncertainty. The confidence sampler scores a drawn patch by its
whole log-probability under the decoder.

Prompts: the given bytes are patched with the run's own patcher (the entropy
model for entropy modes) and stay visible as slots; generated slots follow. The
prompt's last patch is taken as complete (the patcher cannot know what follows).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import patching, samplers, vocab
from bltdiff.errors import ConfigError
from bltdiff.local_decoder import ar_inputs

SAMPLERS = ('ancestral', 'cached', 'adaptive', 'confidence')


def first_symbol_entropy(model, params, cond):
  """Entropy (nats) of each slot's first decoded symbol: cond [b, P, D] -> [b, P]."""
  from bltdiff.latent_mdlm import LatentDenoiser
  b, p, d = cond.shape
  rows = cond.reshape(b * p, d)
  if model.decoder_mode == 'ar':
    blank = jnp.full((b * p, model.patch_config.max_patch_len), vocab.PAD, jnp.int32)
    lp = model._apply(params, rows, ar_inputs(blank), method=LatentDenoiser.ar_log_probs)[:, 0]
  else:
    lp = model._apply(params, rows, method=LatentDenoiser.parallel_first)
  p_ = jnp.exp(lp)
  entropy = -jnp.sum(jnp.where(p_ > 0, p_ * lp, 0.0), axis=-1)
  return entropy.reshape(b, p)


def proposal_log_prob(model, params, cond, proposal):
  """log p(drawn patch | its latent) [b, P]: the confidence of each proposal."""
  from bltdiff.latent_mdlm import LatentDenoiser
  tokens, lengths = proposal
  lp, _, _ = model._apply(params, cond, tokens, jnp.maximum(lengths, 1),
                          method=LatentDenoiser.patch_log_prob)
  return lp


def initial_state(num_samples: int, num_slots: int, max_patch_len: int, prefix=None,
                  suffix=None, gap_slots=None):
  """The numpy state [num_samples, ...] of a template: prefix slots, `gap_slots`
  masked slots (or, with gap_slots=None, all remaining slots as candidates:
  the sampler then draws the total count from p(S)), then suffix slots.

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
              slot_mask=tile(slot_mask))


@functools.lru_cache(maxsize=32)
def compiled_sampler(model, sampler: str, steps: int, top_p: float, options: tuple,
                     draw_count: bool):
  """A jitted (params, key, state) -> (state, SamplerStats). With draw_count,
  the number of generated slots comes from p(S) (conditioned on leaving at least
  one slot after the prompt); otherwise the template's gap is used as given."""
  from bltdiff.latent_mdlm import LatentDenoiser
  opts = dict(options)
  min_steps = int(opts.get('min_steps', 1))
  max_steps = int(opts.get('max_steps', steps))
  P = model.patch_config.num_slots

  @jax.jit
  def run(params, key, state):
    count_key, key = jax.random.split(key)
    if draw_count:
      # p(S | S > prompt slots): the prompt already fills the first k slots.
      k = jnp.sum(state['slot_mask'] & ~state['masked'], axis=-1)
      count_lp = model._apply(params, method=LatentDenoiser.count_log_probs)
      allowed = jnp.arange(P + 1)[None, :] > k[:, None]
      lp = jnp.where(allowed, count_lp[None, :], -jnp.inf)
      count = samplers.gumbel_argmax(count_key, lp)
      in_use = jnp.arange(P)[None, :] < count[:, None]
      state = dict(state, masked=state['masked'] & in_use, slot_mask=state['slot_mask'] & in_use)

    def predict(st):
      visible = st['slot_mask'] & ~st['masked']
      return model._apply(params, st['tokens'], visible, st['slot_mask'],
                          method=LatentDenoiser.denoise)

    def propose(k, cond, st):
      return model.propose(params, k, cond, top_p)

    def commit(st, proposal, unmask):
      out, lengths = proposal
      return dict(st, tokens=jnp.where(unmask[..., None], out, st['tokens']),
                  lengths=jnp.where(unmask, lengths, st['lengths']),
                  masked=st['masked'] & ~unmask)

    masked = lambda st: st['masked']
    if sampler in ('ancestral', 'cached'):
      return samplers.sample_masked(key, state, predict=predict, propose=propose, commit=commit,
                                    masked=masked, schedule=model.schedule, num_steps=steps,
                                    cached=sampler == 'cached')
    if sampler == 'adaptive':
      choose = samplers.entropy_adaptive_select(float(opts.get('adaptive_alpha', 1.0)),
                                                min_steps, max_steps)
      scores = lambda cond, proposal, st: (first_symbol_entropy(model, params, cond),
                                           jnp.zeros(st['masked'].shape, jnp.float32))
    else:
      choose = samplers.confidence_select(float(opts.get('confidence_threshold', 0.9)),
                                          min_steps, max_steps)
      scores = lambda cond, proposal, st: (jnp.zeros(st['masked'].shape, jnp.float32),
                                           proposal_log_prob(model, params, cond, proposal))
    return samplers.sample_adaptive(key, state, predict=predict, propose=propose,
                                    commit=commit, masked=masked, scores=scores, choose=choose,
                                    max_steps=max_steps)

  return run


def slots_to_tokens(state, length: int):
  """Final state -> byte rows [b, length] (PAD after each row's bytes) and the
  number of bytes of each row [b]. Bytes past `length` are cut."""
  lengths = jnp.where(state['slot_mask'], state['lengths'], 0)
  tokens = patching.unpatch_bytes(state['tokens'], lengths, length)
  totals = jnp.minimum(jnp.sum(lengths, -1), length)
  tokens = jnp.where(jnp.arange(length)[None, :] < totals[:, None], tokens, vocab.PAD)
  return np.asarray(tokens), np.asarray(totals)

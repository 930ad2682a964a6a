"""Latent MDLM: masked diffusion over BLT patches (docs/design.md, "The method", "The bound").

A byte row [b, N] is cut by the patcher into P = P_max patch slots [b, P, L]
(L = max_patch_len, PAD filler; `slot_mask` marks real patches). Diffusion
runs on slots:

- Forward process: each real slot is masked with probability 1 − α(t). A
  masked patch hides its bytes AND its length (`network.LatentDenoiser.encode`).
- Denoiser (time-free): E (per patch) -> T (over slots) -> D, p(patch_i | h_i).
- SUBS: visible slots are carried over; only masked slots are predicted.
- The bound, per sequence, in nats:
    1. diffusion  w(t) Σ_{masked i} −log p(patch_i | z_t)     [b]  continuous-time NELBO
    2. count      −log p(S), S = filled slots                  [b]  learned categorical
    3. overflow   overflow_bytes · log 257                     [b]  bytes beyond P_max slots
  summed, divided by N bytes and ln 2 -> bits per byte, an upper bound on
  −log p(bytes): the patcher is a deterministic function of the bytes, so the
  probability of the bytes is at least that of their own patch sequence.

Decoder `diffusion` (a bound of a bound): D is itself a masked-diffusion
model over a patch's L positions y_i [L] (bytes, then END_OF_PATCH;
`diffusion_decoder.diffusion_targets`), so −log p_D(patch_i | h_i) has no closed
form and term 1 uses its own NELBO instead:

    −log p_D(patch_i | h_i) ≤ B_i = E_σ[ Σ_k −log p_D(y_i,σk | y_i,σ<k, h_i) ]

over its reveal orders σ (`patch_nelbo`; their law: `intra_patch`).
As w(t) ≥ 0, replacing each −log p_D(patch_i | z_t) by B_i ≥ it keeps term 1
an upper bound:

    −log p(bytes) ≤ −log p(patches) ≤ E_t[ w(t) Σ_{masked i} −log p_D(patch_i | z_t) ] + 2 + 3
                                    ≤ E_t[ w(t) Σ_{masked i} B_i(z_t) ] + 2 + 3.

Estimate: t [b] antithetic over the batch rows, one slot masking per row,
t_min = 0 at evaluation (the whole bound, unbiased) and TRAIN_T_MIN in
training; per slot model.dec_nelbo_draws draws of σ and of the number
revealed (two streams: σ alone), the same in training and evaluation.
Evaluation averages train.eval_t_samples such draws per batch.
p_D reveals one position at a time in its random order (the sampler at
intra-patch α → ∞); fewer intra-patch steps sample another, cheaper
distribution, not covered by this bound (as fewer latent steps are not).
"""

import functools
import math

import jax
import jax.numpy as jnp

from bltdiff import patching, vocab
from bltdiff.errors import ConfigError
from bltdiff.latent import diffusion_decoder, sampling, train_objective
from bltdiff.latent.decoding import PatchDecoder
from bltdiff.latent.intra_patch import EXACT_INTRA_PATCH, IntraPatchRule
from bltdiff.latent.network import DECODER_MODES, LatentDenoiser
from bltdiff.models.contract import Model
from bltdiff.sampling import categorical, registry
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule, antithetic_times

TRAIN_T_MIN = 1e-3  # as byte MDLM: training cuts t < 1e-3; evaluation uses the whole bound
OVERFLOW_NATS_PER_BYTE = math.log(vocab.NUM_DATA_SYMBOLS)
INTRA_KEY = 2  # fold_in of the loss key for the `diffusion` decoder's order and masking


def patchify(tokens, entropies, patch_config: patching.PatchConfig):
  """Bytes [b, N] (+ entropies) -> (Patches, patch bytes [b, P, L] with PAD filler)."""
  patches = patching.patch(tokens, entropies, patch_config)
  return patches, patching.patch_bytes(tokens, patches, patch_config.max_patch_len)


def mask_slots(key, slot_mask, alpha_t):
  """Forward process on slots: bool [b, P] masked, only among real slots."""
  return (jax.random.uniform(key, slot_mask.shape, jnp.float32) >= alpha_t[:, None]) & slot_mask


class LatentMDLM(Model):
  """Latent MDLM as a `Model`; holds no parameters.

  entropy_fn (documents -> per-byte entropies) patches prompts like the
  training data in entropy modes; whoever loads a trained run sets it
  (`bltdiff.training.restore`), so this module never reads checkpoints."""

  samplers = tuple(registry.SAMPLERS)

  def __init__(self, model_config, patch_config, entropy_fn=None):
    self.config = model_config
    self.patch_config = patching.PatchConfig.from_config(patch_config)
    self.entropy_fn = entropy_fn
    self.decoder_mode = model_config.decoder_mode
    self.schedule = Schedule(model_config.schedule, model_config.schedule_eps)
    self.net = LatentDenoiser.from_config(model_config, self.patch_config.num_slots,
                                          self.patch_config.max_patch_len)
    self.decoder = PatchDecoder(self.net)  # D's draws, for sampling

  @classmethod
  def from_config(cls, config):
    return cls(config.model, config.patching)

  @classmethod
  def validate(cls, config):
    m, p = config.model, config.get('patching')
    if p is None:
      raise ConfigError('patching: latent_mdlm needs a config.patching section')
    if m.decoder_mode not in DECODER_MODES:
      raise ConfigError(f'model.decoder_mode: expected one of {DECODER_MODES}, '
                        f'got {m.decoder_mode!r}')
    if p.mode not in patching.MODES:
      raise ConfigError(f'patching.mode: expected one of {patching.MODES}, got {p.mode!r}')
    if p.mode in patching.ENTROPY_MODES and not config.data.use_entropies:
      raise ConfigError(f'data.use_entropies: patching.mode={p.mode!r} needs entropies '
                        f'(set by the data chain, or prepare shards with --entropy_model)')
    for name in ('enc_dim', 'dec_dim'):
      heads = m[name.replace('dim', 'heads')]
      if m[name] % heads or (m[name] // heads) % 2:
        raise ConfigError(f'model.{name}: {m[name]} must split into {heads} heads of even size')
    diffusion_decoder.check_options(m)
    if p.num_slots < 1 or p.max_patch_len < 1:
      raise ConfigError('patching.num_slots: num_slots and max_patch_len must be positive')

  # --- the network's calls -------------------------------------------------------

  def _apply(self, params, *args, method, **kwargs):
    return self.net.apply({'params': params}, *args, method=method, **kwargs)

  def denoise(self, params, patch_tokens, visible, slot_mask, dropout_key=None):
    """E then T -> decoder conditions [b, P, D_dec] (dropout only with a key)."""
    rngs = {'dropout': dropout_key} if dropout_key is not None else None
    return self._apply(params, patch_tokens, visible, slot_mask, dropout_key is None,
                       method=LatentDenoiser.denoise, rngs=rngs)

  def encode_patches(self, params, patch_tokens):
    """E alone on visible patches: [b, k, L] -> [b, k, D] (see network)."""
    return self._apply(params, patch_tokens, method=LatentDenoiser.encode_patches)

  def contextualize(self, params, enc, visible, slot_mask):
    """T on encodings, invisible slots hidden: [b, P, D] -> conditions [b, P, D_dec]."""
    return self._apply(params, enc, visible, slot_mask,
                       method=lambda m, e, v, s: m.contextualize(m.hide(e, v), s))

  def patch_log_prob(self, params, cond, patch_tokens, lengths, key=None):
    """(log p(patch | h) [b, P], hits, valid [b, P, L+1]), D teacher-forced;
    `diffusion`: minus its NELBO (key: the order and the number revealed;
    see the module doc)."""
    return self._apply(params, cond, patch_tokens, lengths, key,
                       method=LatentDenoiser.patch_log_prob)

  def symbol_log_probs(self, params, cond, patch_tokens, lengths):
    """D's distributions along given patches, as parts (log-probs [b, P, n, V],
    valid [b, P, n]); see network.LatentDenoiser.symbol_log_probs."""
    return self._apply(params, cond, patch_tokens, lengths,
                       method=LatentDenoiser.symbol_log_probs)

  def count_log_probs(self, params):
    return self._apply(params, method=LatentDenoiser.count_log_probs)

  def ar_decoder_log_probs(self, params, cond_rows, inputs):
    """The `ar` decoder teacher-forced: cond [rows, D_dec], inputs [rows, L+1]
    (START then bytes) -> log-probs [rows, L+1, DEC_VOCAB]."""
    return self._apply(params, lambda dec, c, x: dec(c, x), cond_rows, inputs,
                       method=LatentDenoiser.decoder_apply)

  def propose(self, params, key, cond, top_p: float = 1.0,
              intra_patch: IntraPatchRule = EXACT_INTRA_PATCH):
    """D's draw for every slot: cond [b, P, D_dec] -> (bytes [b, P, L], lengths [b, P])."""
    b, p, d = cond.shape
    out, lengths, _ = self.decoder.draw(params, key, cond.reshape(b * p, d), top_p,
                                        intra_patch=intra_patch)
    return out.reshape(b, p, -1), lengths.reshape(b, p)

  def first_symbol_log_probs(self, params, cond):
    """log-probs of each slot's first decoded symbol: cond [b, P, D_dec] -> [b, P, V]."""
    b, p, d = cond.shape
    return self.decoder.first_symbol_log_probs(params, cond.reshape(b * p, d)).reshape(b, p, -1)

  # --- parameters and the bound ------------------------------------------------

  def init(self, key, batch):
    tokens = jnp.asarray(batch['tokens'][:1])
    patches, pt = patchify(tokens, _entropies(batch, 1), self.patch_config)
    return self.net.init({'params': key}, pt, patches.lengths, patches.slot_mask)['params']

  def slot_log_probs(self, params, patch_tokens, lengths, slot_mask, masked, dropout_key=None,
                     intra_key=None):
    """log p(patch_i | h_i) for every slot [b, P], the masked slots hidden from
    T (minus its NELBO for `diffusion`, its draws from intra_key), and the
    decoder's teacher-forced hits/valid [b, P, L+1] (`diffusion`: [b, P, L])."""
    cond = self.denoise(params, patch_tokens, slot_mask & ~masked, slot_mask, dropout_key)
    return self.patch_log_prob(params, cond, patch_tokens, lengths, intra_key)

  def slot_nll(self, params, patch_tokens, lengths, slot_mask, masked, dropout_key=None,
               intra_key=None):
    """−log p(patch_i | z) [b, P] (0 where not masked), hits/valid of `slot_log_probs`."""
    lp, hits, valid = self.slot_log_probs(params, patch_tokens, lengths, slot_mask, masked,
                                          dropout_key, intra_key)
    return jnp.where(masked, -lp, 0.0), hits, valid

  def loss(self, params, batch, key, train: bool = True, t=None):
    """Mean bound in nats per byte, and metrics ('bpb': the bound). In training,
    model.slot_weighting and model.masking choose bltdiff/latent/train_objective.py's
    objective and estimate."""
    tokens = jnp.asarray(batch['tokens'])
    b, n = tokens.shape
    patches, pt = patchify(tokens, _entropies(batch, b), self.patch_config)
    t_key, mask_key, dropout_key = jax.random.split(key, 3)
    if t is None and train and train_objective.masking_of(self.config) == 'count':
      masked, weight = train_objective.count_masked(mask_key, patches.slot_mask)  # t integrated
    else:
      t = antithetic_times(t_key, b, TRAIN_T_MIN if train else 0.0) if t is None else t
      masked = mask_slots(mask_key, patches.slot_mask, self.schedule.alpha(t))
      weight = self.schedule.weight(t)  # [b]
    lp, hits, valid = self.slot_log_probs(params, pt, patches.lengths, patches.slot_mask, masked,
                                          dropout_key if train and self.config.dropout else None,
                                          jax.random.fold_in(key, INTRA_KEY))
    nll = jnp.where(masked, -lp, 0.0)
    diffusion = weight * jnp.sum(nll, axis=-1)  # 1. [b]
    filled = jnp.sum(patches.slot_mask, axis=-1)
    count = -self.count_log_probs(params)[filled]  # 2. [b]
    overflow = patches.num_overflow_bytes.astype(jnp.float32) * OVERFLOW_NATS_PER_BYTE  # 3. [b]
    loss = bound = jnp.mean(diffusion + count + overflow) / n
    if train and train_objective.weighting_of(self.config) == 'slot':  # another objective
      per_slot = train_objective.per_slot(nll, patches.lengths, patches.slot_mask)
      loss = jnp.mean(weight * jnp.sum(per_slot, axis=-1) + count + overflow) / n
    visible_weight = train_objective.visible_weight_of(self.config)
    if train and visible_weight:  # an autoencoding term beside the bound (train_objective)
      loss = loss + visible_weight * train_objective.visible_reconstruction(
          lp, patches.lengths, patches.slot_mask & ~masked)
    byte_acc, patch_acc = accuracies(hits, valid, masked)
    to_bits = lambda x: x / (n * math.log(2.0))
    return loss, {
        'loss': loss, 'bpb': bound / math.log(2.0),
        'diffusion_bpb': to_bits(jnp.mean(diffusion)), 'count_bpb': to_bits(jnp.mean(count)),
        'overflow_bpb': to_bits(jnp.mean(overflow)),
        'mean_patch_bytes': jnp.sum(patches.lengths) / jnp.maximum(jnp.sum(filled), 1),
        'recon_byte_acc': byte_acc, 'recon_patch_acc': patch_acc,
    }

  # --- latent-space API -----------------------------------------------------------

  def patchify(self, tokens, entropies=None):
    """(Patches, patch bytes [b, P, L]) of byte rows with this model's patcher."""
    tokens = jnp.asarray(tokens, jnp.int32)
    return patchify(tokens, None if entropies is None else jnp.asarray(entropies),
                    self.patch_config)

  def encode(self, params, tokens, entropies=None, masked=None):
    """Bytes [b, N] -> (patch latents h [b, P, D_dec], Patches): E then T with
    the slots in `masked` (bool [b, P], default none) hidden."""
    patches, pt = self.patchify(tokens, entropies)
    masked = jnp.zeros_like(patches.slot_mask) if masked is None else masked & patches.slot_mask
    return self.denoise(params, pt, patches.slot_mask & ~masked, patches.slot_mask), patches

  def decode(self, params, latents, key=None, *, top_p: float = 1.0,
             intra_patch: IntraPatchRule = EXACT_INTRA_PATCH):
    """Latents [b, P, D_dec] -> (patch bytes [b, P, L] PAD filler, lengths [b, P]),
    drawn from D (float64 Gumbel; key=None uses a fixed key). intra_patch:
    the `diffusion` decoder's step rule (default one position per step)."""
    key = jax.random.PRNGKey(0) if key is None else key
    return categorical.run_with_x64(_decode_fn(self, top_p, intra_patch), params, key, latents)

  def intra_patch_plan(self, params, latents, intra_patch: IntraPatchRule):
    """The `diffusion` decoder's plan for each slot: latents [b, P, D_dec] ->
    (Ĥ(p) [b, P] nats, T_steps(p) [b, P]) from its first, all-masked pass."""
    b, p, d = latents.shape
    entropy = self.decoder.entropy_estimate(params, latents.reshape(b * p, d))
    steps = self.decoder.intra_patch_steps(entropy, intra_patch)
    return entropy.reshape(b, p), steps.reshape(b, p)

  def sampler_adapter(self, params, top_p: float, num_samples: int, length: int):
    P, L = self.patch_config.num_slots, self.patch_config.max_patch_len
    state = jax.tree.map(jnp.asarray, sampling.initial_state(
        num_samples, P, L, self.config.dim, enc_dtype=jnp.dtype(self.config.dtype)))
    return sampling.SlotAdapter(self, params, top_p), state

  def sample(self, params, key, options: SamplerOptions, *, num_samples: int, length: int,
             prefix=None, suffix=None, num_slots=None, gap_slots=None):
    """See `bltdiff.latent.sampling.sample`."""
    return sampling.sample(self, params, key, options, num_samples=num_samples, length=length,
                           prefix=prefix, suffix=suffix, num_slots=num_slots,
                           gap_slots=gap_slots)


def accuracies(hits, valid, masked):
  """Decoder accuracy on masked slots: (per symbol, per whole patch). Hits are
  teacher-forced argmaxes, so a patch with every hit is exactly what greedy
  decoding from its latent returns."""
  mvalid = valid & masked[..., None]
  patch_ok = jnp.all(hits | ~valid, axis=-1) & masked
  return (jnp.sum(hits & mvalid) / jnp.maximum(jnp.sum(mvalid), 1),
          jnp.sum(patch_ok) / jnp.maximum(jnp.sum(masked), 1))


def _entropies(batch, rows):
  ent = batch.get('entropies')
  return None if ent is None else jnp.asarray(ent[:rows], jnp.float32)


@functools.lru_cache(maxsize=8)
def _decode_fn(model: LatentMDLM, top_p: float, intra_patch: IntraPatchRule):
  return jax.jit(lambda params, key, latents: model.propose(params, key, latents, top_p,
                                                           intra_patch))

"""Conditional latent MDLM: bltdiff trained on (source, target) pairs,
`data.format = 'pairs'` (docs/design.md, "Conditional training").

A pair row (`bltdiff.data.pair_batches`, b rows of L symbols)
  tokens [b, L] = [source s][SEP][target t][END][PAD ...]
is patched by the run's patcher with two more forced starts, at the first
target position s + 1 and at the first PAD (`pair_patches`): SEP (a
BOUNDARY, which always starts a patch) is then a one-byte patch, no patch
mixes source and target, and PAD is in no patch. The first K slots hold the
source and SEP (*source slots*, always visible, never masked); the next S_t
hold the target and END (*target slots*); P = P_max slots in all.

The bound, per row, in nats (cf. `bltdiff.latent.diffusion`):
  1. diffusion  w(t) · Σ_{masked target i} −log p_θ(patch_i | z_t)    masking target slots only
  2. count      −log p_θ(S_t | source)                                 a source-conditioned p(S)
  3. overflow   (target symbols in no slot) · log 257
Bits per byte are Σ_rows (1 + 2 + 3) / Σ target symbols / ln 2. It bounds
−log p_θ(target, END | source): the patcher is a deterministic function of
the row, so the target's bytes are at least as probable as their own patch
sequence, whose probability factors as p(S_t | source) · p(patches | S_t,
source), and MDLM's NELBO bounds the second factor with the source slots
given.

p(S_t | source) (`ConditionalDenoiser.count_given_source`): the run's p(S)
logits plus an MLP of the mean local-encoder vector of the source slots
and an embedding of K, restricted to the S_t that fit (1 ≤ S_t ≤ P − K; 0
only when the source fills every slot). The local encoder sees each patch
alone, so this depends on the source's patches and on nothing of the target.

Generation (`generate`): the source slots are patched from the source's
entropies, S_t is drawn from p(S_t | source), then the registry's sampler
unmasks the S_t target slots through `bltdiff.latent.sampling.SlotAdapter`.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import patch_starts, patching, vocab
from bltdiff.data import pair_batches
from bltdiff.data.packing import BOUNDARY_ENTROPY
from bltdiff.errors import ConfigError
from bltdiff.latent import diffusion, sampling
from bltdiff.latent.decoding import PatchDecoder
from bltdiff.latent.network import COUNT_LOGIT_SCALE, LatentDenoiser
from bltdiff.models import conditional
from bltdiff.sampling import categorical, loops, registry
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import antithetic_times


def pair_patches(tokens, entropies, source_len, patch_config: patching.PatchConfig):
  """Pair rows -> (Patches without PAD, source_slots, target_slots bool [b, P]).

  tokens int32 [b, L] (PAD only after a row's last symbol), entropies
  float32 [b, L] or None, source_len int32 [b]."""
  b, n = tokens.shape
  P = patch_config.num_slots
  idx = jnp.arange(n)[None, :]
  num_real = jnp.sum(tokens != vocab.PAD, axis=-1)
  real_byte = idx < num_real[:, None]
  starts = (patch_starts.compute_starts(tokens, entropies, patch_config)
            | (idx == source_len[:, None] + 1) | (idx == num_real[:, None]))
  layout = patching.layout_from_starts(starts, P)
  # PAD patches come after every real one (PAD is a suffix and starts a
  # patch); dropping them leaves the real layout as if PAD were not there.
  slot_mask = layout.slot_mask & (layout.offsets < num_real[:, None])
  lengths = jnp.where(slot_mask, layout.lengths, 0)
  covered = jnp.sum(lengths, axis=-1)
  patches = patching.Patches(
      starts=starts & real_byte, patch_ids=jnp.where(real_byte, layout.patch_ids, P),
      positions=layout.positions, lengths=lengths,
      offsets=jnp.where(slot_mask, layout.offsets, covered[:, None]), slot_mask=slot_mask,
      num_patches=jnp.sum(starts & real_byte, axis=-1), num_overflow_bytes=num_real - covered)
  source_slots = slot_mask & (layout.offsets <= source_len[:, None])
  return patches, source_slots, slot_mask & ~source_slots


class ConditionalDenoiser(LatentDenoiser):
  """LatentDenoiser with p(S_t | source): the count head of the module docstring."""

  def setup(self):
    super().setup()
    self.source_size_embedding = self.param(
        'source_size_embedding', nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                              (None, 'embed')),
        (self.num_slots + 1, self.dim), jnp.float32)
    self.count_hidden = nn.Dense(self.dim, use_bias=False, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ('embed', 'mlp')))
    # Zero-initialised: training starts from the marginal p(S) logits.
    self.count_out = nn.Dense(self.num_slots + 1, use_bias=False,
                              kernel_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                       ('mlp', None)))

  def count_given_source(self, enc, source_slots):
    """log p(S_t | source) [b, P + 1] from E's vectors enc [b, P, D] of the
    source slots (bool [b, P])."""
    P = self.num_slots
    k = jnp.sum(source_slots, axis=-1)
    pooled = (jnp.sum(jnp.where(source_slots[..., None], enc, 0.0), axis=1)
              / jnp.maximum(k, 1)[:, None].astype(enc.dtype))
    h = nn.gelu(self.count_hidden(jnp.concatenate(
        [pooled.astype(jnp.float32), self.source_size_embedding[k]], axis=-1)))
    logits = COUNT_LOGIT_SCALE * self.count_logits[None, :] + self.count_out(h).astype(jnp.float32)
    s = jnp.arange(P + 1)[None, :]
    room = (P - k)[:, None]
    fits = ((s >= 1) & (s <= room)) | ((s == 0) & (room == 0))
    return jax.nn.log_softmax(jnp.where(fits, logits, -jnp.inf), axis=-1)

  def denoise_and_count(self, patch_tokens, visible, slot_mask, source_slots,
                        deterministic=True):
    """One E pass for both: (decoder conditions [b, P, D_dec], log p(S_t | source))."""
    enc = self.encode(patch_tokens, visible)
    return (self.contextualize(enc, slot_mask, deterministic),
            self.count_given_source(enc, source_slots))

  def __call__(self, patch_tokens, lengths, slot_mask):
    cond, count = self.denoise_and_count(patch_tokens, slot_mask, slot_mask, slot_mask)
    return self.patch_log_prob(cond, patch_tokens, lengths), count


class ConditionalLatentMDLM(diffusion.LatentMDLM):
  """Latent MDLM on pairs: source slots given, the bound over target slots."""

  def __init__(self, model_config, patch_config, data_config, entropy_fn=None):
    super().__init__(model_config, patch_config, entropy_fn)
    self.data_config = data_config
    self.net = ConditionalDenoiser.from_config(model_config, self.patch_config.num_slots,
                                               self.patch_config.max_patch_len)
    self.decoder = PatchDecoder(self.net)

  @classmethod
  def from_config(cls, config):
    return cls(config.model, config.patching, config.data)

  def pair_patchify(self, batch):
    """(Patches, patch bytes [b, P, L], source_slots, target_slots) of pair rows."""
    tokens = jnp.asarray(batch['tokens'], jnp.int32)
    ents = batch.get('entropies')
    patches, source_slots, target_slots = pair_patches(
        tokens, None if ents is None else jnp.asarray(ents, jnp.float32),
        jnp.asarray(batch['source_len'], jnp.int32), self.patch_config)
    pt = patching.patch_bytes(tokens, patches, self.patch_config.max_patch_len)
    return patches, pt, source_slots, target_slots

  def loss(self, params, batch, key, train: bool = True, t=None):
    """Bound in nats per target symbol, and metrics (module docstring)."""
    patches, pt, source_slots, target_slots = self.pair_patchify(batch)
    P = self.patch_config.num_slots
    t_key, mask_key, dropout_key = jax.random.split(key, 3)
    if t is None:
      t = antithetic_times(t_key, pt.shape[0], diffusion.TRAIN_T_MIN if train else 0.0)
    masked = diffusion.mask_slots(mask_key, target_slots, self.schedule.alpha(t))
    dropout = train and self.config.dropout
    cond, count_lp = self.net.apply(
        {'params': params}, pt, patches.slot_mask & ~masked, patches.slot_mask, source_slots,
        not dropout, method=ConditionalDenoiser.denoise_and_count,
        rngs={'dropout': dropout_key} if dropout else None)
    lp, hits, valid = self.patch_log_prob(params, cond, pt, patches.lengths)
    rows = conditional.row_valid(batch)
    keep = lambda x: jnp.where(rows, x, 0.0)  # filler rows have no target (and -inf counts)
    diffusion_nats = keep(self.schedule.weight(t) * jnp.sum(jnp.where(masked, -lp, 0.0), -1))
    num_target = jnp.sum(target_slots, axis=-1)
    count_nats = keep(-jnp.take_along_axis(count_lp, num_target[:, None], axis=-1)[:, 0])
    lost = jnp.asarray(batch['target_mask']) & (patches.patch_ids >= P)
    overflow_nats = keep(jnp.sum(lost, -1).astype(jnp.float32) * diffusion.OVERFLOW_NATS_PER_BYTE)
    symbols = conditional.target_symbols(batch)
    loss = jnp.sum(diffusion_nats + count_nats + overflow_nats) / symbols
    byte_acc, patch_acc = diffusion.accuracies(hits, valid, masked)
    to_bits = lambda x: jnp.sum(x) / (symbols * math.log(2.0))
    return loss, {
        'loss': loss, 'bpb': loss / math.log(2.0), 'diffusion_bpb': to_bits(diffusion_nats),
        'count_bpb': to_bits(count_nats), 'overflow_bpb': to_bits(overflow_nats),
        'mean_patch_bytes': jnp.sum(jnp.where(target_slots, patches.lengths, 0))
                            / jnp.maximum(jnp.sum(num_target), 1),
        'recon_byte_acc': byte_acc, 'recon_patch_acc': patch_acc,
    }

  def with_source_entropies(self, rows):
    """rows with 'entropies' (each non-empty source scored by entropy_fn,
    BOUNDARY_ENTROPY elsewhere) where the patching mode needs them and rows
    have none. Empty sources (the trainer's samples) need no entropy model."""
    if 'entropies' in rows or self.patch_config.mode not in patching.ENTROPY_MODES:
      return rows
    tokens, lens = np.asarray(rows['tokens']), np.asarray(rows['source_len'])
    ents = np.full(tokens.shape, BOUNDARY_ENTROPY, np.float32)
    given = np.flatnonzero(lens > 0)
    if given.size and self.entropy_fn is None:
      raise ConfigError('patching.entropy_model: sources need the entropy model of the run')
    if given.size:
      scored = self.entropy_fn([bytes(tokens[r, :lens[r]].astype(np.uint8).tolist()) for r in given])
      for r, e in zip(given, scored):
        ents[r, :lens[r]] = e
    return dict(rows, entropies=ents)

  def generate(self, params, key, options: SamplerOptions, rows):
    """Targets after the sources of rows ([n, L], blank after the separator):
    rows [n, L] [source][SEP][target][END][PAD ...] and sampler stats."""
    conditional.check_conditional_call('latent_mdlm', self.samplers, options, None)
    rows = self.with_source_entropies(rows)
    ents = rows.get('entropies')
    tokens = jnp.asarray(rows['tokens'], jnp.int32)
    state, stats = categorical.run_with_x64(
        _target_sampler(self, options), params, key, tokens,
        None if ents is None else jnp.asarray(ents, jnp.float32),
        jnp.asarray(rows['source_len'], jnp.int32))
    out = np.array(sampling.slots_to_tokens(state, tokens.shape[1])[0])  # writable
    for r, s in enumerate(np.asarray(rows['source_len'])):
      target, ended = pair_batches.target_of(out[r], s)
      out[r, s + 1 + len(target) + int(ended):] = vocab.PAD
    return out, dict(loops.summarize(stats), **sampling.counter_stats(state),
                     mean_patches=float(np.mean(np.sum(np.asarray(state['slot_mask']), -1))))

  def sample(self, params, key, options: SamplerOptions, *, num_samples: int, length: int,
             prefix=None, suffix=None):
    """Targets for the source `prefix` (None = empty): rows [num_samples, length]."""
    conditional.check_conditional_call('latent_mdlm', self.samplers, options, suffix)
    return self.generate(params, key, options,
                         conditional.prompt_rows(prefix, num_samples, length, self.data_config))


@functools.lru_cache(maxsize=32)
def _target_sampler(model: ConditionalLatentMDLM, options: SamplerOptions):
  """jit((params, key, tokens, entropies, source_len) -> (slot state, SamplerStats)):
  the source slots encoded once (`sampling.encode_revealed`), S_t drawn from
  p(S_t | source) on those encodings, then the registry's sampler over the
  S_t target slots (the state of `bltdiff.latent.sampling`)."""
  P, L = model.patch_config.num_slots, model.patch_config.max_patch_len

  @jax.jit
  def run(params, key, tokens, entropies, source_len):
    count_key, key = jax.random.split(key)
    b = tokens.shape[0]
    patches, source_slots, _ = pair_patches(tokens, entropies, source_len, model.patch_config)
    pt = jnp.where(source_slots[..., None], patching.patch_bytes(tokens, patches, L), vocab.PAD)
    enc = jnp.zeros((b, P, model.config.dim), jnp.dtype(model.config.dtype))
    enc, encoded = sampling.encode_revealed(model, params, pt, source_slots, enc)
    count_lp = model.net.apply({'params': params}, enc, source_slots,
                               method=ConditionalDenoiser.count_given_source)
    count = categorical.gumbel_argmax(count_key, count_lp)
    in_use = jnp.arange(P)[None, :] < (jnp.sum(source_slots, -1) + count)[:, None]
    state = dict(tokens=pt, lengths=jnp.where(source_slots, patches.lengths, 0),
                 masked=in_use & ~source_slots, slot_mask=in_use, enc=enc,
                 **{name: jnp.int32(0) for name in sampling.COUNTERS})
    state['encoder_rows'] = encoded
    adapter = sampling.SlotAdapter(model, params, options.top_p,
                                   sampling.intra_patch_rule(options))
    return registry.run(adapter, key, state, options)

  return run

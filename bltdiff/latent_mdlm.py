"""Latent MDLM: masked diffusion over BLT patches (the project design, "The model").

A byte row [batch, N] is cut by the patcher into P_max patch slots
[batch, slots, L] (L = max_patch_len, PAD filler; `slot_mask` marks real
patches). Diffusion runs on slots:

- Forward process: each real slot is masked with probability 1 − α(t). A
  masked patch hides its bytes AND its length: its row is blanked to PAD before
  the local encoder, and its encoder output is replaced by a learned mask vector.
- Denoiser (time-free): local encoder E (per patch) -> latent transformer T
  (bidirectional over slots, RoPE over slot index, padding slots excluded by
  segments) -> local decoder D, p(patch_i | h_i), per slot.
- SUBS: visible slots are carried over; only masked slots are predicted.
- Loss per sequence, in nats:
    w(t) Σ_{masked i} −log p(patch_i | z_t)        continuous-time NELBO
    − log p(S)                                     S = filled slots, learned
                                                   categorical over 0..P_max
    + overflow_bytes · log 257                     bytes beyond P_max slots,
                                                   coded uniformly
  divided by N bytes and ln 2 -> bits per byte, an upper bound on −log p(bytes):
  the patcher is a deterministic function of the bytes, so the probability of
  the bytes is at least that of their own patch sequence.
"""

import functools
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import layers, patching, samplers, vocab
from bltdiff.errors import ConfigError
from bltdiff.local_decoder import (ARDecoder, ParallelDecoder, ar_inputs, ar_patch_log_prob,
                                   ar_sample, parallel_patch_log_prob, parallel_sample)
from bltdiff.local_encoder import LocalEncoder
from bltdiff.schedules import Schedule, antithetic_times

TRAIN_T_MIN = 1e-3  # as byte MDLM: training cuts t < 1e-3; evaluation uses the whole bound
DECODER_MODES = ('ar', 'parallel')
OVERFLOW_NATS_PER_BYTE = math.log(vocab.NUM_DATA_SYMBOLS)
COUNT_LOGIT_SCALE = 32.0  # learning-rate multiplier of p(S)'s logits (see LatentDenoiser)


class LatentDenoiser(nn.Module):
  """E, T and D with the learned p(S). Call methods with `apply(..., method=...)`."""
  cfg: dict  # model config as a plain dict (hashable fields are read in setup)
  max_patch_len: int
  num_slots: int

  def setup(self):
    c, dtype = self.cfg, jnp.dtype(self.cfg.get('dtype', 'float32'))
    self.encoder = LocalEncoder(
        dim=c['enc_dim'], num_layers=c['enc_layers'], num_heads=c['enc_heads'],
        mlp_dim=c['enc_mlp_dim'], out_dim=c['dim'], pool_queries=c.get('pool_queries', 2),
        ngram_sizes=tuple(c.get('ngram_sizes', (3, 4, 5, 6, 7, 8))),
        hash_buckets=c.get('hash_buckets', 4096), dtype=dtype)
    self.mask_vector = self.param('mask_vector', nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ('embed',)), (c['dim'],), jnp.float32)
    self.latent = layers.Transformer(c['num_layers'], c['num_heads'], c['mlp_dim'], dtype,
                                     dropout=c.get('dropout', 0.0))
    self.to_decoder = nn.Dense(c['dec_dim'], use_bias=False, dtype=dtype,
                               kernel_init=nn.with_logical_partitioning(
                                   nn.initializers.lecun_normal(), ('embed', 'mlp')))
    dec = dict(dim=c['dec_dim'], num_layers=c['dec_layers'], num_heads=c['dec_heads'],
               mlp_dim=c['dec_mlp_dim'], dtype=dtype)
    if c.get('decoder_mode', 'ar') == 'ar':
      self.decoder = ARDecoder(**dec)
    else:
      self.decoder = ParallelDecoder(max_patch_len=self.max_patch_len, **dec)
    # p(S), S = number of filled slots in 0..P_max: one logit per value, scaled
    # up so that Adam (steps of ~lr per parameter) can move them by tens of
    # nats within a short run; unscaled, p(S) stays nearly flat and samples
    # draw far too few or too many patches.
    self.count_logits = self.param('count_logits', nn.with_logical_partitioning(
        nn.initializers.zeros, (None,)), (self.num_slots + 1,), jnp.float32)

  def encode(self, patch_tokens, visible):
    """E: [batch, slots, L], visible bool [batch, slots] -> [batch, slots, dim];
    invisible slots (masked or padding) are blanked first and get the mask vector."""
    blanked = jnp.where(visible[..., None], patch_tokens, vocab.PAD)
    enc = self.encoder(blanked)
    return jnp.where(visible[..., None], enc, self.mask_vector.astype(enc.dtype))

  def contextualize(self, enc, slot_mask, deterministic=True):
    """T: [batch, slots, dim] -> decoder conditions [batch, slots, dec_dim].
    Padding slots (segment 0) neither attend nor are attended to."""
    segments = slot_mask.astype(jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(enc.shape[1], dtype=jnp.int32), segments.shape)
    mask = layers.attention_mask(segments, segments, causal=False)
    h = self.latent(enc, mask, positions, deterministic=deterministic)
    return self.to_decoder(h)

  def denoise(self, patch_tokens, visible, slot_mask, deterministic=True):
    """E then T: the expensive, time-free network call of one sampler step."""
    return self.contextualize(self.encode(patch_tokens, visible), slot_mask, deterministic)

  def patch_log_prob(self, cond, patch_tokens, lengths):
    """D teacher-forced: cond [b, P, dec_dim] -> log p(patch) [b, P], hits, valid [b, P, L+1]."""
    b, p, L = patch_tokens.shape
    rows = lambda x: x.reshape((b * p,) + x.shape[2:])
    cond_r, tok_r, len_r = rows(cond), rows(patch_tokens), rows(lengths)
    if isinstance(self.decoder, ARDecoder):
      lp, hits, valid = ar_patch_log_prob(self.decoder(cond_r, ar_inputs(tok_r)), tok_r, len_r)
    else:
      lp, hits, valid = parallel_patch_log_prob(self.decoder(cond_r, tok_r, len_r), tok_r, len_r)
    unrow = lambda x: x.reshape((b, p) + x.shape[1:])
    return unrow(lp), unrow(hits), unrow(valid)

  def ar_log_probs(self, cond_rows, inputs):
    return self.decoder(cond_rows, inputs)

  def parallel_first(self, cond_rows):
    return self.decoder.first(cond_rows)

  def parallel_length(self, cond_rows, x0):
    return self.decoder.length(cond_rows, x0)

  def parallel_rest(self, cond_rows, x0, lengths):
    return self.decoder.rest(cond_rows, x0, lengths)

  def count_log_probs(self):
    return jax.nn.log_softmax(COUNT_LOGIT_SCALE * self.count_logits)

  def __call__(self, patch_tokens, lengths, slot_mask):
    cond = self.denoise(patch_tokens, slot_mask, slot_mask)
    return self.patch_log_prob(cond, patch_tokens, lengths), self.count_log_probs()


def patchify(tokens, entropies, patch_config: patching.PatchConfig):
  """Bytes [b, N] (+ entropies) -> (Patches, patch bytes [b, P, L] with PAD filler)."""
  patches = patching.patch(tokens, entropies, patch_config)
  return patches, patching.patch_bytes(tokens, patches, patch_config.max_patch_len)


def mask_slots(key, slot_mask, alpha_t):
  """Forward process on slots: bool [b, P] masked, only among real slots."""
  return (jax.random.uniform(key, slot_mask.shape, jnp.float32) >= alpha_t[:, None]) & slot_mask


class LatentMDLM:
  """What the trainer and samplers need of latent MDLM; holds no parameters."""

  samplers = ('ancestral', 'cached', 'adaptive', 'confidence')

  def __init__(self, model_config, patch_config):
    self.config = model_config
    # The run's entropy model, to patch prompts like the training data.
    self.entropy_model_dir = patch_config.get('entropy_model', '') or ''
    self._entropy_fn = None
    self.patch_config = patching.PatchConfig.from_config(patch_config)
    self.decoder_mode = model_config.get('decoder_mode', 'ar')
    self.schedule = Schedule(model_config.get('schedule', 'loglinear'),
                             model_config.get('schedule_eps', 0.0))
    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in model_config.items()}
    self.net = LatentDenoiser(cfg=cfg, max_patch_len=self.patch_config.max_patch_len,
                              num_slots=self.patch_config.num_slots)

  @classmethod
  def from_config(cls, config):
    return cls(config.model, config.patching)

  @staticmethod
  def validate(config):
    m, p = config.model, config.get('patching')
    if p is None:
      raise ConfigError('patching: latent_mdlm needs a config.patching section')
    if m.get('decoder_mode', 'ar') not in DECODER_MODES:
      raise ConfigError(f'model.decoder_mode: expected one of {DECODER_MODES}, '
                        f'got {m.decoder_mode!r}')
    if p.mode not in patching.MODES:
      raise ConfigError(f'patching.mode: expected one of {patching.MODES}, got {p.mode!r}')
    if p.mode in patching.ENTROPY_MODES and not config.data.get('use_entropies', False):
      raise ConfigError(f'data.use_entropies: patching.mode={p.mode!r} needs entropies '
                        f'(set by prepare_data, or prepare shards with --entropy_model)')
    for name in ('enc_dim', 'dec_dim'):
      heads = m[name.replace('dim', 'heads')]
      if m[name] % heads or (m[name] // heads) % 2:
        raise ConfigError(f'model.{name}: {m[name]} must split into {heads} heads of even size')
    if p.num_slots < 1 or p.max_patch_len < 1:
      raise ConfigError('patching.num_slots: num_slots and max_patch_len must be positive')

  # --- parameters and the bound ------------------------------------------------

  def init(self, key, batch):
    tokens = jnp.asarray(batch['tokens'][:1])
    patches, pt = patchify(tokens, _entropies(batch, 1), self.patch_config)
    return self.net.init({'params': key}, pt, patches.lengths, patches.slot_mask)['params']

  def _apply(self, params, *args, method, **kwargs):
    return self.net.apply({'params': params}, *args, method=method, **kwargs)

  def slot_nll(self, params, patch_tokens, lengths, slot_mask, masked, dropout_key=None):
    """−log p(patch_i | z) for every slot [b, P] (0 where not masked), and
    the decoder's teacher-forced hits/valid [b, P, L+1]."""
    rngs = {'dropout': dropout_key} if dropout_key is not None else None
    visible = slot_mask & ~masked
    cond = self._apply(params, patch_tokens, visible, slot_mask, dropout_key is None,
                       method=LatentDenoiser.denoise, rngs=rngs)
    lp, hits, valid = self._apply(params, cond, patch_tokens, lengths,
                                  method=LatentDenoiser.patch_log_prob)
    return jnp.where(masked, -lp, 0.0), hits, valid

  def loss(self, params, batch, key, train: bool = True, t=None):
    """Mean bound in nats per byte, and metrics ('bpb' over all bytes)."""
    tokens = jnp.asarray(batch['tokens'])
    b, n = tokens.shape
    patches, pt = patchify(tokens, _entropies(batch, b), self.patch_config)
    t_key, mask_key, dropout_key = jax.random.split(key, 3)
    if t is None:
      t = antithetic_times(t_key, b, TRAIN_T_MIN if train else 0.0)
    masked = mask_slots(mask_key, patches.slot_mask, self.schedule.alpha(t))
    nll, hits, valid = self.slot_nll(params, pt, patches.lengths, patches.slot_mask, masked,
                                     dropout_key if train and self.config.get('dropout', 0.0)
                                     else None)
    diffusion = self.schedule.weight(t) * jnp.sum(nll, axis=-1)  # [b]
    filled = jnp.sum(patches.slot_mask, axis=-1)
    count = -self._apply(params, method=LatentDenoiser.count_log_probs)[filled]
    overflow = patches.num_overflow_bytes.astype(jnp.float32) * OVERFLOW_NATS_PER_BYTE
    per_seq = diffusion + count + overflow
    loss = jnp.mean(per_seq) / n
    byte_acc, patch_acc = _accuracies(hits, valid, masked)
    to_bits = lambda x: x / (n * math.log(2.0))
    return loss, {
        'loss': loss, 'bpb': loss / math.log(2.0),
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
    """Bytes [b, N] -> patch latents h [b, P, dec_dim]: E then T, with the slots
    in `masked` (bool [b, P], default none) hidden. h_i is what D decodes slot i
    from. Returns (latents, Patches)."""
    patches, pt = self.patchify(tokens, entropies)
    masked = jnp.zeros_like(patches.slot_mask) if masked is None else masked & patches.slot_mask
    latents = self._apply(params, pt, patches.slot_mask & ~masked, patches.slot_mask,
                          method=LatentDenoiser.denoise)
    return latents, patches

  def decode(self, params, latents, key=None, *, top_p: float = 1.0):
    """Latents [b, P, dec_dim] -> (patch bytes [b, P, L] PAD filler, lengths [b, P]).
    key=None decodes greedily-ish by a fixed key; D is sampled with float64 Gumbel."""
    key = jax.random.PRNGKey(0) if key is None else key
    return samplers.run_with_x64(_decode_fn(self, top_p), params, key, latents)

  def reconstruction_accuracy(self, params, tokens, entropies=None, key=None,
                              mask_rate: float = 0.5):
    """How well D recovers masked patches from context, decoding greedily.

    Masks each real slot with probability mask_rate; returns byte_acc (over the
    masked patches' bytes and end symbols) and patch_acc (whole patches)."""
    key = jax.random.PRNGKey(0) if key is None else key
    patches, pt = self.patchify(tokens, entropies)
    alpha = jnp.full(patches.slot_mask.shape[:1], 1.0 - mask_rate, jnp.float32)
    masked = mask_slots(key, patches.slot_mask, alpha)
    _, hits, valid = self.slot_nll(params, pt, patches.lengths, patches.slot_mask, masked)
    byte_acc, patch_acc = _accuracies(hits, valid, masked)
    return {'byte_acc': float(byte_acc), 'patch_acc': float(patch_acc)}

  # --- sampling ---------------------------------------------------------------------

  def propose(self, params, key, cond, top_p: float = 1.0):
    """D's draw for every slot: cond [b, P, dec_dim] -> (bytes [b, P, L], lengths [b, P]).
    Cheap next to `denoise`; samplers call it once per step."""
    b, p, d = cond.shape
    rows = cond.reshape(b * p, d)
    L = self.patch_config.max_patch_len
    if self.decoder_mode == 'ar':
      fn = lambda c, x: self._apply(params, c, x, method=LatentDenoiser.ar_log_probs)
      out, lengths = ar_sample(fn, key, rows, L, top_p)
    else:
      out, lengths = parallel_sample(
          lambda c: self._apply(params, c, method=LatentDenoiser.parallel_first),
          lambda c, x0: self._apply(params, c, x0, method=LatentDenoiser.parallel_length),
          lambda c, x0, n: self._apply(params, c, x0, n, method=LatentDenoiser.parallel_rest),
          key, rows, top_p)
    return out.reshape(b, p, L), lengths.reshape(b, p)

  def sample(self, params, key, *, num_samples: int, length: int, steps: int,
             sampler: str = 'cached', top_p: float = 1.0, prefix=None, suffix=None,
             num_slots=None, gap_slots=None, **options):
    """Draws byte rows [num_samples, length] (BOUNDARY allowed; PAD after each
    row's generated bytes) and stats (latent_calls, steps, proposals, row_bytes).

    sampler: 'ancestral' / 'cached' (MDLM's rule over `steps` steps; cached
    makes no latent call after a step that revealed nothing), 'adaptive'
    (entropy-adaptive: options adaptive_alpha, min_steps, max_steps) or
    'confidence' (confidence_threshold, min_steps, max_steps); see
    bltdiff/latent_sampling.py. prefix / suffix: byte arrays kept visible
    (patched like the training data). The number of slots to generate is drawn
    from the learned p(S) given the prompt, unless gap_slots (or num_slots,
    the total) fixes it."""
    from bltdiff import latent_sampling
    if sampler not in self.samplers:
      raise ConfigError(f'sample.sampler: latent_mdlm has samplers {self.samplers}, '
                        f'got {sampler!r}')
    P, L = self.patch_config.num_slots, self.patch_config.max_patch_len
    prefix_patches = self.prompt_patches(prefix)
    suffix_patches = self.prompt_patches(suffix)
    k = 0 if prefix_patches is None else len(prefix_patches[1])
    if gap_slots is None and num_slots is not None:
      gap_slots = int(num_slots) - k
    if suffix_patches is not None and gap_slots is None:
      raise ConfigError('--gap: infilling needs the gap size (bytes or slots)')
    state = latent_sampling.initial_state(num_samples, P, L, prefix_patches, suffix_patches,
                                          gap_slots)
    run = latent_sampling.compiled_sampler(self, sampler, int(steps), float(top_p),
                                           tuple(sorted(options.items())), gap_slots is None)
    state, stats = samplers.run_with_x64(run, params, key, jax.tree.map(jnp.asarray, state))
    tokens, totals = latent_sampling.slots_to_tokens(state, length)
    return tokens, {'latent_calls': int(stats.latent_calls), 'steps': int(stats.steps),
                    'proposals': int(stats.proposals), 'mean_bytes': float(totals.mean()),
                    'row_bytes': totals.tolist(),
                    'mean_patches': float(np.mean(np.sum(np.asarray(state['slot_mask']), -1)))}

  def prompt_patches(self, data):
    """Byte array [n] -> (patch bytes [k, L], lengths [k]) with this run's patcher,
    or None. Entropy modes score the bytes with the run's entropy model."""
    if data is None or len(data) == 0:
      return None
    data = np.asarray(data, np.int32)
    entropies = None
    if self.patch_config.mode in patching.ENTROPY_MODES:
      if not self.entropy_model_dir:
        raise ConfigError('patching.entropy_model: prompts need the entropy model of the run')
      if self._entropy_fn is None:
        from bltdiff import entropy
        self._entropy_fn = entropy.load_entropy_fn(self.entropy_model_dir)
      entropies = self._entropy_fn([bytes(data.astype(np.uint8).tolist())])[0][None]
    patches, pt = self.patchify(data[None], entropies)
    k = int(patches.num_patches[0])
    if int(patches.num_overflow_bytes[0]) or k >= self.patch_config.num_slots:
      raise ConfigError(f'prompt: {len(data)} bytes make {k} patches, too many for '
                        f'patching.num_slots={self.patch_config.num_slots}')
    return np.asarray(pt[0, :k]), np.asarray(patches.lengths[0, :k])

  # --- data chain -----------------------------------------------------------------

  @classmethod
  def prepare_data(cls, config, workdir: str):
    """The run's chain before training: entropy model -> shards with entropies
    -> threshold calibration. Returns (config with the resolved patcher,
    data.prepared_dir and data.use_entropies, prepared_dir). Each step is
    skipped when its output is already there, so resuming (and eval) is cheap."""
    return prepare_chain(config, workdir)


def _accuracies(hits, valid, masked):
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
def _decode_fn(model: LatentMDLM, top_p: float):
  return jax.jit(lambda params, key, latents: model.propose(params, key, latents, top_p))


# --- the data chain: entropy model -> shards with entropies -> calibration ----------


def _entropy_model_dir(config, workdir: str) -> str:
  """The entropy model's workdir, trained here first if config.patching.entropy_model is empty."""
  from bltdiff import checkpointing, train  # the trainer imports models: load lazily
  given = config.patching.get('entropy_model', '')
  if given:
    return given
  ent_dir = os.path.join(workdir, 'entropy_model')
  ent_config = config.get('entropy_model')
  if ent_config is None:
    raise ConfigError('entropy_model: patching.mode needs entropies, and neither '
                      'patching.entropy_model (a trained workdir) nor an entropy_model run '
                      'config is given')
  latest = checkpointing.make_manager(ent_dir).latest_step() \
      if os.path.isdir(checkpointing.checkpoint_dir(ent_dir)) else None
  if latest is None or latest < ent_config.train.num_steps:
    train.train_and_evaluate(ent_config, ent_dir)
  return ent_dir


def _calibrate(config, prepared_dir: str, workdir: str, use_entropies: bool) -> dict:
  """Fits the patcher's free parameter to patching.calibrate_target_mean bytes
  per patch on a sample of the train split; cached in workdir/calibration.json."""
  from bltdiff import calibrate
  p = config.patching
  path = os.path.join(workdir, 'calibration.json')
  key = dict(target_mean=float(p.calibrate_target_mean), mode=p.mode,
             max_patch_len=int(p.max_patch_len), prepared_dir=os.path.abspath(prepared_dir),
             seq_len=int(config.data.seq_len))
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
    if cached.get('key') == key:
      return cached
  tokens, ents = calibrate.read_prepared_sample(
      prepared_dir, int(p.get('calibrate_bytes', 1 << 19)), with_entropies=use_entropies)
  if ents is None:
    ents = [np.zeros(len(t), np.float32) for t in tokens]
  tok, ent, valid = calibrate.pack_documents(tokens, ents, int(config.data.seq_len))
  result = calibrate.calibrate(tok, ent, valid, patching.PatchConfig.from_config(p),
                               float(p.calibrate_target_mean))
  result['key'] = key
  os.makedirs(workdir, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  return result


def prepare_chain(config, workdir: str):
  """See LatentMDLM.prepare_data."""
  from bltdiff.data import pipeline
  from data_prep.writer import prepare
  config = config.copy_and_resolve_references()
  needs_entropies = config.patching.mode in patching.ENTROPY_MODES
  with config.unlocked():
    if config.data.get('prepared_dir', ''):
      prepared_dir = pipeline.ensure_prepared(config.data, workdir)
      from data_prep import manifest
      if needs_entropies and not manifest.read_manifest(prepared_dir)['has_entropies']:
        raise ConfigError(f'data.prepared_dir: {prepared_dir} has no entropies, which '
                          f'patching.mode={config.patching.mode!r} needs (prepare it with '
                          f'--entropy_model, or leave prepared_dir empty)')
    elif needs_entropies:
      from bltdiff import entropy
      ent_dir = _entropy_model_dir(config, workdir)
      prepared_dir = os.path.join(workdir, 'data')
      prepare(config.data.source, prepared_dir, **pipeline._prepare_kwargs(config.data),
              entropy_fn=entropy.load_entropy_fn(ent_dir))
      config.patching.entropy_model = ent_dir
    else:
      prepared_dir = pipeline.ensure_prepared(config.data, workdir)
    config.data.prepared_dir = prepared_dir
    config.data.use_entropies = needs_entropies
    if config.patching.get('calibrate_target_mean', 0.0) > 0 and config.patching.mode != 'byte':
      result = _calibrate(config, prepared_dir, workdir, needs_entropies)
      for field in ('threshold', 'monotonic_threshold', 'static_size'):
        config.patching[field] = result[field]
  return config, prepared_dir

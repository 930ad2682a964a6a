"""The latent MDLM network: local encoder E, latent transformer T, local decoder
D, and the learned distribution p(S) of the number of filled slots.

Shapes: b = batch, P = num_slots (P_max), L = max_patch_len, D = model dim,
D_dec = decoder dim.

  encode       patch bytes [b, P, L], visible [b, P] -> [b, P, D]; invisible
               slots (masked or padding) are blanked before E and replaced by a
               learned mask vector after it, so nothing of them reaches T.
  contextualize  T over slots (bidirectional, RoPE over slot index, padding
               slots excluded) -> decoder conditions h [b, P, D_dec]
  denoise      encode then contextualize: the expensive, time-free call of a step
  patch_log_prob  D teacher-forced: log p(patch_i | h_i) [b, P] (`ar`, `parallel`),
               or minus the intra-patch NELBO, a lower bound on it (`diffusion`)
  symbol_log_probs D teacher-forced: its whole distribution at every symbol of
               given patches (what a KL between two decoders needs; `ar`, `parallel`)
  count_log_probs log p(S) [P + 1]
The decoder itself (its draws, its first-symbol distribution) is reached by
`LatentMDLM` through `decoder_apply`.
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bltdiff import layers, vocab
from bltdiff.latent.diffusion_decoder import DiffusionDecoder
from bltdiff.latent.local_decoder import (ARDecoder, ParallelDecoder, ar_inputs,
                                          ar_patch_log_prob, parallel_patch_log_prob)
from bltdiff.latent.local_encoder import LocalEncoder
from bltdiff.latent.patch_nelbo import diffusion_patch_nelbo, entropy_head_fit, ordered_patch_nll

DECODER_MODES = ('ar', 'parallel', 'diffusion')
COUNT_LOGIT_SCALE = 32.0  # learning-rate multiplier of p(S)'s logits (see setup)


class LatentDenoiser(nn.Module):
  """E, T and D with the learned p(S). Fields mirror config.model (enc_* the
  local encoder, dec_* the local decoder) and config.patching (slots, L)."""
  num_slots: int
  max_patch_len: int
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout: float
  enc_dim: int
  enc_layers: int
  enc_heads: int
  enc_mlp_dim: int
  pool_queries: int
  ngram_sizes: Sequence[int]
  hash_buckets: int
  dec_dim: int
  dec_layers: int
  dec_heads: int
  dec_mlp_dim: int
  decoder_mode: str
  dtype: str
  dec_order_bias: float = 0.0  # the `diffusion` decoder's reveal order (intra_patch)
  dec_nelbo_draws: int = 1  # its NELBO's draws per patch, averaged (patch_log_prob)
  dec_two_stream: bool = False  # its training pass: all positions of one order at once
  dec_entropy_head: bool = False  # its Ĥ(p): a head's prediction, not the first pass
  dec_block_queries: bool = False  # two streams: also train the T < L steps' predictions
  dec_previous_symbol: bool = False  # its tokens also embed the symbol before them
  dec_lookahead: int = 0  # two streams: queries without the 1..K symbols before (drafts)

  @classmethod
  def from_config(cls, model_config, num_slots: int, max_patch_len: int) -> 'LatentDenoiser':
    fields = ('dim', 'num_layers', 'num_heads', 'mlp_dim', 'dropout', 'enc_dim', 'enc_layers',
              'enc_heads', 'enc_mlp_dim', 'pool_queries', 'hash_buckets', 'dec_dim',
              'dec_layers', 'dec_heads', 'dec_mlp_dim', 'decoder_mode', 'dtype')
    return cls(num_slots=num_slots, max_patch_len=max_patch_len,
               ngram_sizes=tuple(model_config.ngram_sizes),
               dec_order_bias=float(model_config.get('dec_order_bias', 0.0)),  # older configs: 0
               dec_nelbo_draws=int(model_config.get('dec_nelbo_draws', 1)),
               dec_two_stream=bool(model_config.get('dec_two_stream', False)),
               dec_entropy_head=bool(model_config.get('dec_entropy_head', False)),
               dec_block_queries=bool(model_config.get('dec_block_queries', False)),
               dec_previous_symbol=bool(model_config.get('dec_previous_symbol', False)),
               dec_lookahead=int(model_config.get('dec_lookahead', 0)),
               **{f: model_config[f] for f in fields})

  def setup(self):
    dtype = jnp.dtype(self.dtype)
    self.encoder = LocalEncoder(
        dim=self.enc_dim, num_layers=self.enc_layers, num_heads=self.enc_heads,
        mlp_dim=self.enc_mlp_dim, out_dim=self.dim, pool_queries=self.pool_queries,
        ngram_sizes=tuple(self.ngram_sizes), hash_buckets=self.hash_buckets, dtype=dtype)
    self.mask_vector = self.param('mask_vector', nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ('embed',)), (self.dim,), jnp.float32)
    self.latent = layers.Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                                     mlp_dim=self.mlp_dim, dtype=dtype, dropout=self.dropout)
    self.to_decoder = nn.Dense(self.dec_dim, use_bias=False, dtype=dtype,
                               kernel_init=nn.with_logical_partitioning(
                                   nn.initializers.lecun_normal(), ('embed', 'mlp')))
    dec = dict(dim=self.dec_dim, num_layers=self.dec_layers, num_heads=self.dec_heads,
               mlp_dim=self.dec_mlp_dim, dtype=dtype)
    if self.decoder_mode == 'ar':
      self.decoder = ARDecoder(max_patch_len=self.max_patch_len, **dec)
    elif self.decoder_mode == 'diffusion':
      self.decoder = DiffusionDecoder(max_patch_len=self.max_patch_len,
                                      two_stream=self.dec_two_stream,
                                      entropy_head=self.dec_entropy_head,
                                      previous_symbol=self.dec_previous_symbol, **dec)
    else:
      self.decoder = ParallelDecoder(max_patch_len=self.max_patch_len, **dec)
    # p(S), S = number of filled slots in 0..P_max: one logit per value, scaled
    # up so that Adam (steps of ~lr per parameter) can move them by tens of
    # nats within a short run; unscaled, p(S) stays nearly flat and samples
    # draw far too few or too many patches.
    self.count_logits = self.param('count_logits', nn.with_logical_partitioning(
        nn.initializers.zeros, (None,)), (self.num_slots + 1,), jnp.float32)

  def encode(self, patch_tokens, visible):
    """E: [b, P, L], visible bool [b, P] -> [b, P, D]."""
    blanked = jnp.where(visible[..., None], patch_tokens, vocab.PAD)
    return self.hide(self.encoder(blanked), visible)

  def encode_patches(self, patch_tokens):
    """E alone on patches known to be visible: [b, k, L] -> [b, k, D]. Each
    patch is encoded on its own, so a sampler can encode a slot once, when it
    is revealed, and keep the result."""
    return self.encoder(patch_tokens)

  def hide(self, enc, visible):
    """Invisible slots' encodings replaced by the learned mask vector: [b, P, D]."""
    return jnp.where(visible[..., None], enc, self.mask_vector.astype(enc.dtype))

  def contextualize(self, enc, slot_mask, deterministic=True):
    """T: [b, P, D] -> decoder conditions [b, P, D_dec]. Padding slots
    (segment 0) neither attend nor are attended to."""
    segments = slot_mask.astype(jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(enc.shape[1], dtype=jnp.int32), segments.shape)
    mask = layers.attention_mask(segments, segments, causal=False)
    h = self.latent(enc, mask, positions, deterministic=deterministic)
    return self.to_decoder(h)

  def denoise(self, patch_tokens, visible, slot_mask, deterministic=True):
    """E then T: the expensive, time-free network call of one sampler step."""
    return self.contextualize(self.encode(patch_tokens, visible), slot_mask, deterministic)

  def _teacher_forced(self, cond, patch_tokens, lengths):
    """D's outputs teacher-forced on rows [b * P, ...] (`ar`, `parallel`):
    (outputs, tokens, lengths)."""
    b, p, _ = patch_tokens.shape
    rows = lambda x: x.reshape((b * p,) + x.shape[2:])
    cond_r, tok_r, len_r = rows(cond), rows(patch_tokens), rows(lengths)
    if self.decoder_mode == 'ar':
      return self.decoder(cond_r, ar_inputs(tok_r)), tok_r, len_r
    return self.decoder(cond_r, tok_r, len_r), tok_r, len_r

  def patch_log_prob(self, cond, patch_tokens, lengths, key=None):
    """D teacher-forced: cond [b, P, D_dec] -> log p(patch) [b, P], and the
    per-symbol argmax hits and valid mask [b, P, L+1] (`diffusion`: minus the
    intra-patch NELBO, the mean of dec_nelbo_draws draws of the reveal order
    and of the number revealed from `key` (the same bound, less variance, at
    that many decoder rows per patch), and hits / valid [b, P, L] at the
    first draw's hidden positions (two streams: at all, and no count drawn);
    see `patch_nelbo.diffusion_patch_nelbo` and `ordered_patch_nll`)."""
    b, p, _ = patch_tokens.shape
    if self.decoder_mode == 'diffusion':
      k = self.dec_nelbo_draws  # draw d of patch r is row d·b·P + r
      rows = lambda x: jnp.tile(x.reshape((b * p,) + x.shape[2:]), (k,) + (1,) * (x.ndim - 2))
      cond_r, tok_r, len_r = rows(cond), rows(patch_tokens), rows(lengths)
      if self.dec_two_stream:
        bound, hits, valid = ordered_patch_nll(
            lambda y, r, q: self.decoder.ordered(cond_r, y, r, q), tok_r, len_r, key,
            self.dec_order_bias, self.dec_block_queries, self.dec_lookahead)
      else:
        bound, hits, valid = diffusion_patch_nelbo(lambda z: self.decoder(cond_r, z), tok_r,
                                                   len_r, key, self.dec_order_bias)
      if self.dec_entropy_head:  # trains the head; adds exactly 0 to the bound
        bound = bound + entropy_head_fit(self.decoder.patch_entropy(cond_r), bound)
      lp = -jnp.mean(bound.reshape(k, b * p), axis=0)
      hits, valid = hits[:b * p], valid[:b * p]
    else:
      out, tok_r, len_r = self._teacher_forced(cond, patch_tokens, lengths)
      score = ar_patch_log_prob if self.decoder_mode == 'ar' else parallel_patch_log_prob
      lp, hits, valid = score(out, tok_r, len_r)
    unrow = lambda x: x.reshape((b, p) + x.shape[1:])
    return unrow(lp), unrow(hits), unrow(valid)

  def symbol_log_probs(self, cond, patch_tokens, lengths):
    """D's whole conditional distributions along given patches (teacher-forced):
    p(patch | h) = Π_parts Π_valid positions p(symbol | h, earlier symbols).
    Returns a tuple of parts (log-probs [b, P, n, V], valid [b, P, n]):
      ar        one part: n = L+1 positions, V = DEC_VOCAB
      parallel  first byte (n = 1, V = 257), length given it (n = 1, V = L),
                the other bytes given both (n = L, V = 257; 1 <= j < length).
    The `diffusion` decoder has no such product (its patch log-probability is
    only bounded), so it has none."""
    if self.decoder_mode == 'diffusion':
      raise ValueError('symbol_log_probs: the diffusion decoder has no teacher-forced '
                       'conditionals; distil an ar or parallel run')
    b, p, _ = patch_tokens.shape
    out, tok_r, len_r = self._teacher_forced(cond, patch_tokens, lengths)
    unrow = lambda x: x.reshape((b, p) + x.shape[1:])
    if self.decoder_mode == 'ar':
      valid = jnp.arange(out.shape[1])[None, :] <= len_r[:, None]
      return ((unrow(out), unrow(valid)),)
    first, length, rest = out
    ones = jnp.ones((tok_r.shape[0], 1), bool)
    j = jnp.arange(rest.shape[1])[None, :]
    inside = (j >= 1) & (j < len_r[:, None])
    return ((unrow(first[:, None]), unrow(ones)), (unrow(length[:, None]), unrow(ones)),
            (unrow(rest), unrow(inside)))

  def count_log_probs(self):
    """log p(S) [P + 1]."""
    return jax.nn.log_softmax(COUNT_LOGIT_SCALE * self.count_logits)

  def decoder_apply(self, fn: Callable, *args):
    """fn(decoder, *args): a call into D alone (its draws and first-symbol
    distribution run D step by step, outside this module's own methods)."""
    return fn(self.decoder, *args)

  def __call__(self, patch_tokens, lengths, slot_mask):
    cond = self.denoise(patch_tokens, slot_mask, slot_mask)
    # init only: any key traces the same parameters
    return (self.patch_log_prob(cond, patch_tokens, lengths, jax.random.PRNGKey(0)),
            self.count_log_probs())

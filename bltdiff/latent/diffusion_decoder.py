"""The `diffusion` local decoder: a masked-diffusion model over a patch's L
positions (bytes, then END_OF_PATCH to the last position), time-free,
conditioned on the slot's latent h_i. Its NELBO stands in for
−log p(patch | h), under the reveal order of model.dec_order_bias
(`intra_patch`); its draws are `decoding`'s.

Two ways to train the same denoiser (model.dec_two_stream):
  one stream   a bidirectional pass over z (MASK where hidden), trained on one
               random (order, count) per pass: `patch_nelbo.diffusion_patch_nelbo`
  two streams  XLNet's two-stream attention: a content stream of the bytes and
               a query stream per position, where position j's query sees the
               content of the positions revealed before it in a drawn order
               σ. One pass gives −log p(y_j | y_σ<j) at every j, the whole
               chain rule of σ: `patch_nelbo.ordered_patch_nll`. Near left to right the
               one-stream estimate trains about one position per pass; this
               trains all L, for a pass about twice as long.

Outputs use local_decoder.DEC_VOCAB symbols, like the other decoders.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from bltdiff import layers, vocab
from bltdiff.errors import ConfigError
from bltdiff.latent.local_decoder import DEC_VOCAB, cond_projection

HIDDEN_RANK = 1 << 20  # two streams: the content rank of a hidden position


# model.dec_* fields only this decoder reads: (name, value that leaves them off,
# valid(value), what a valid value is, what it is the diffusion decoder's).
DIFFUSION_OPTIONS = (
    ('dec_order_bias', 0.0, lambda v: isinstance(v, (int, float)) and math.isfinite(v),
     'a finite number', 'a reveal order'),
    ('dec_nelbo_draws', 1, lambda v: isinstance(v, int) and v >= 1, 'an integer >= 1',
     'a NELBO'),
    ('dec_two_stream', False, lambda v: isinstance(v, bool), 'True or False', 'two streams'),
    ('dec_entropy_head', False, lambda v: isinstance(v, bool), 'True or False',
     'an entropy head for Ĥ(p)'),
    ('dec_block_queries', False, lambda v: isinstance(v, bool), 'True or False',
     'block queries'),
    ('dec_previous_symbol', False, lambda v: isinstance(v, bool), 'True or False',
     'a previous-symbol input'),
    ('dec_lookahead', 0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
     'an integer >= 0', 'lookahead queries'),
)


def check_options(model_config):
  """One-line errors for the model.dec_* fields only this decoder has."""
  for name, off, valid, expected, what in DIFFUSION_OPTIONS:
    value = model_config.get(name, off)
    if not valid(value):
      raise ConfigError(f'model.{name}: expected {expected}, got {value!r}')
    if value != off and model_config.decoder_mode != 'diffusion':
      raise ConfigError(f'model.{name}: only the diffusion decoder has {what} '
                        f'(decoder_mode={model_config.decoder_mode!r}); set it to {off!r}')
  for name, off in (('dec_block_queries', False), ('dec_lookahead', 0)):
    if model_config.get(name, off) != off and not model_config.get('dec_two_stream'):
      raise ConfigError(f'model.{name}: these are extra queries of the query stream; '
                        f'set model.dec_two_stream = True, or this to {off!r}')


def diffusion_targets(patch_tokens, lengths):
  """[rows, L] bytes (PAD filler), [rows] lengths in 1..L -> y [rows, L]: the
  bytes, then END_OF_PATCH from position len on (none when len = L). One y per
  patch and one patch per y of this form, so p(patch) = p(y)."""
  j = jnp.arange(patch_tokens.shape[1])[None, :]
  return jnp.where(j < lengths[:, None], patch_tokens, vocab.END_OF_PATCH)


def diffusion_lengths(y):
  """y [rows, L] (no MASK) -> lengths [rows]: the first END_OF_PATCH, L if none."""
  j = jnp.arange(y.shape[1])[None, :]
  return jnp.min(jnp.where(y == vocab.END_OF_PATCH, j, y.shape[1]), axis=-1)


def patch_complete(z):
  """z [rows, L] (MASK where hidden) -> bool [rows]: every position before the
  first visible END_OF_PATCH is visible (all of them when there is none)."""
  j = jnp.arange(z.shape[1])[None, :]
  first_end = jnp.min(jnp.where(z == vocab.END_OF_PATCH, j, z.shape[1]), axis=-1, keepdims=True)
  return jnp.all((z != vocab.MASK) | (j > first_end), axis=-1)


def diffusion_constrain(logits, z):
  """logits [rows, L, DEC_VOCAB], z [rows, L] (MASK where hidden) -> log-probs
  [rows, L, DEC_VOCAB] of each position's clean symbol (float32), restricted
  by what z shows, so the denoiser stays a function of z alone (time-free):
    never MASK; no end at position 0 (len >= 1);
    only the end after a visible end (ends run to the last position);
    no end before a visible byte.
  z may also be [rows, Q, L]: what each prediction sees (two streams, where
  that differs by prediction; logits [rows, Q, ...], prediction i for position
  i mod L).
  A draw that reveals one position at a time thus always yields the form of
  `diffusion_targets`. (Positions revealed together may disagree, e.g. an end
  before a byte; the first end wins, `diffusion_lengths`.)"""
  seen = z[:, None, :] if z.ndim == 2 else z  # [rows, 1 or Q, L]
  L = seen.shape[-1]
  j = (jnp.arange(logits.shape[1]) % L)[None, :]
  k = jnp.arange(L)
  is_end = seen == vocab.END_OF_PATCH
  is_byte = (seen != vocab.MASK) & ~is_end
  first_end = jnp.min(jnp.where(is_end, k, L), axis=-1)  # [rows, 1 or Q]
  last_byte = jnp.max(jnp.where(is_byte, k, -1), axis=-1)
  end_sym = jnp.arange(DEC_VOCAB) == vocab.END_OF_PATCH  # [V]
  end_ok = ((j > 0) & (j > last_byte))[..., None]  # [rows, L or Q, 1]
  allowed = (jnp.arange(DEC_VOCAB) != vocab.MASK) & (end_ok | ~end_sym)
  allowed = jnp.where((j > first_end)[..., None], end_sym, allowed)  # forced end wins
  return jax.nn.log_softmax(jnp.where(allowed, logits.astype(jnp.float32), -1e30), axis=-1)


def previous_symbols(z):
  """z [..., L] -> [..., L]: the symbol one position before each, MASK at
  position 0 (what `DiffusionDecoder`'s previous_symbol input embeds)."""
  return jnp.concatenate([jnp.full(z.shape[:-1] + (1,), vocab.MASK, z.dtype), z[..., :-1]],
                         axis=-1)


class DiffusionDecoder(nn.Module):
  """(cond [rows, cond_dim], z [rows, L], rank) -> log-probs [rows, L, DEC_VOCAB]:
  a transformer over the patch's L positions, the latent and a learned
  embedding of the position added to every position, no time input; the
  output constrained by `diffusion_constrain`. One call is one intra-patch
  pass. Why the position embedding beside RoPE: RoPE only encodes offsets
  between tokens, and hidden positions all carry MASK and the same latent, so
  in the all-masked first pass every position would get the same prediction
  (position 0 as position 7: a byte or the end).

  one stream (two_stream=False): bidirectional attention over z.
  two streams: a content stream (embedding of the symbol) and a query stream
  (embedding of MASK, the same as a hidden position's input in one stream)
  per position, one sequence [content | query] of 2L with a mask: content k
  sees content i ranked at or before it, query j sees content ranked before
  it and itself, nobody sees a query. Query j's output predicts y_j; it never
  sees y_j, so every position is a prediction at once (`ordered`).

  entropy_head: a small head on the latent alone that predicts the patch's
  NELBO, Ĥ(p) for the step rule (`patch_entropy`, trained by
  `patch_nelbo.entropy_head_fit`).

  previous_symbol: each token's input also carries an embedding of the symbol
  at the position before it, as that token sees it (MASK when hidden from it,
  or at position 0). Why: the `ar` decoder's position j has y_{j−1} in its
  residual stream, so a one-layer decoder models the bigram without
  attention; a query here would otherwise get y_{j−1} only through attention
  shared with every other visible byte. It is what the token sees, so every
  prediction stays a function of the visible symbols (the bound holds): in two
  streams a content token or query takes y_{j−1} only when it sees that
  position (ranked before it), and whatever a content token carries, a query
  that sees it sees too (ranks are transitive)."""
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  max_patch_len: int
  dtype: jnp.dtype = jnp.float32
  two_stream: bool = False
  entropy_head: bool = False
  previous_symbol: bool = False

  def setup(self):
    self.embed = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype, name='embed')
    self.position_embed = layers.Embed(self.max_patch_len, self.dim, self.dtype,
                                       name='position_embed')
    self.cond = cond_projection(self.dim, 'cond')
    self.transformer = layers.Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                                          mlp_dim=self.mlp_dim, dtype=self.dtype)
    self.readout = layers.readout(DEC_VOCAB)
    if self.previous_symbol:
      self.previous_embed = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype,
                                         name='previous_embed')
    if self.entropy_head:
      self.entropy_norm = layers.RMSNorm(dtype=self.dtype)
      self.entropy_mlp = layers.SwiGLU(self.mlp_dim, self.dtype)
      self.entropy_readout = layers.readout(1, name='entropy_readout')

  def patch_entropy(self, cond):
    """Ĥ(p) [rows] nats from cond [rows, cond_dim] alone: the head's estimate
    of the patch's NELBO given h, trained on it (`patch_nelbo.entropy_head_fit`)
    from a stop-gradient copy of the projected latent (it moves nothing else)."""
    x = jax.lax.stop_gradient(self.cond(cond).astype(self.dtype))
    x = x + self.entropy_mlp(self.entropy_norm(x))
    return jax.nn.softplus(self.entropy_readout(self.entropy_norm(x))[..., 0].astype(jnp.float32))

  def __call__(self, cond, z, rank=None):
    """Hidden positions of z (MASK) given the visible ones. rank [rows, L]:
    the order the visible ones were revealed in (two streams only, where a
    visible symbol's content depends on what was revealed before it; None:
    left to right)."""
    positions = jnp.broadcast_to(jnp.arange(z.shape[1], dtype=jnp.int32), z.shape)
    if self.two_stream:
      visible_rank = jnp.where(z != vocab.MASK, positions if rank is None else rank,
                               HIDDEN_RANK)
      return self._two_streams(cond, z, visible_rank, jnp.full(z.shape, HIDDEN_RANK))
    x = self._inputs(cond, z, positions, previous_symbols(z))
    segments = jnp.ones(z.shape, jnp.int32)
    mask = layers.attention_mask(segments, segments, causal=False)
    return diffusion_constrain(self.readout(self.transformer(x, mask, positions)), z)

  def ordered(self, cond, y, rank, query_rank=None):
    """Two streams, teacher-forced: y [rows, L] (no MASK), rank [rows, L] a
    reveal order (0 first) -> log p(y_j = · | y_i for rank_i < rank_j)
    [rows, L, DEC_VOCAB]. query_rank [rows, k·L]: k query tokens per
    position instead, the i-th seeing the content ranked below query_rank[i]
    (-> [rows, k·L, DEC_VOCAB], position i mod L)."""
    return self._two_streams(cond, y, rank, rank if query_rank is None else query_rank)

  def _inputs(self, cond, symbols, positions, previous):
    """symbols, positions, previous [rows, n] -> [rows, n, dim]. previous: the
    symbol before each token as it sees it (read with previous_symbol only)."""
    x = (self.embed(symbols) + self.position_embed(positions)
         + self.cond(cond).astype(self.dtype)[:, None, :])
    return x + self.previous_embed(previous) if self.previous_symbol else x

  def _two_streams(self, cond, content, content_rank, query_rank):
    (rows, L), Q = content.shape, query_rank.shape[1]  # Q = k·L queries
    positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (rows, L))
    query_positions = jnp.tile(positions, (1, Q // L))
    content_sees = content_rank[:, None, :] <= content_rank[:, :, None]  # [rows, L, L]
    query_sees = content_rank[:, None, :] < query_rank[:, :, None]  # [rows, Q, L]
    seen = jnp.where(query_sees, content[:, None, :], vocab.MASK)  # [rows, Q, L]
    # The symbol before each token, if it sees it: content k sees k−1 ranked before it.
    content_previous = previous_symbols(
        jnp.where(content_rank < jnp.roll(content_rank, -1, axis=1), content, vocab.MASK))
    query_previous = jnp.take_along_axis(
        previous_symbols(seen), (query_positions % L)[..., None], axis=2)[..., 0]
    x = jnp.concatenate([self._inputs(cond, content, positions, content_previous),
                         self._inputs(cond, jnp.full((rows, Q), vocab.MASK), query_positions,
                                      query_previous)], axis=1)
    own = jnp.broadcast_to(jnp.eye(Q, dtype=bool), (rows, Q, Q))
    mask = jnp.concatenate([
        jnp.concatenate([content_sees, jnp.zeros((rows, L, Q), bool)], axis=2),
        jnp.concatenate([query_sees, own], axis=2)], axis=1)[:, None]  # [rows, 1, L+Q, L+Q]
    # Only the queries are read: the last block computes nothing for the content.
    out = self.transformer(x, mask, jnp.concatenate([positions, query_positions], axis=1),
                           only_last=Q)
    return diffusion_constrain(self.readout(out), seen)

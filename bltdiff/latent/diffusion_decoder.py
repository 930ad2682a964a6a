"""The `diffusion` local decoder: a masked-diffusion model over a patch's L
positions (bytes, then END_OF_PATCH to the last position), time-free,
conditioned on the slot's latent h_i. Its NELBO stands in for
−log p(patch | h) (`diffusion_patch_nelbo`), under the reveal order of
model.dec_order_bias (`intra_patch`); its draws are `decoding`'s.

Outputs use local_decoder.DEC_VOCAB symbols, like the other decoders.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from bltdiff import layers, vocab
from bltdiff.errors import ConfigError
from bltdiff.latent import intra_patch
from bltdiff.latent.local_decoder import DEC_VOCAB, cond_projection


def check_options(model_config):
  """One-line errors for the model.dec_* fields only this decoder has."""
  m = model_config
  order_bias = m.get('dec_order_bias', 0.0)
  if not isinstance(order_bias, (int, float)) or not math.isfinite(order_bias):
    raise ConfigError(f'model.dec_order_bias: expected a finite number, got {order_bias!r}')
  if order_bias and m.decoder_mode != 'diffusion':
    raise ConfigError(f'model.dec_order_bias: only the diffusion decoder has a reveal order '
                      f'(decoder_mode={m.decoder_mode!r}); set it to 0')
  draws = m.get('dec_nelbo_draws', 1)
  if not isinstance(draws, int) or draws < 1:
    raise ConfigError(f'model.dec_nelbo_draws: expected an integer >= 1, got {draws!r}')
  if draws != 1 and m.decoder_mode != 'diffusion':
    raise ConfigError(f'model.dec_nelbo_draws: only the diffusion decoder has a NELBO '
                      f'(decoder_mode={m.decoder_mode!r}); set it to 1')


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


def diffusion_constrain(logits, z):
  """logits [rows, L, DEC_VOCAB], z [rows, L] (MASK where hidden) -> log-probs
  [rows, L, DEC_VOCAB] of each position's clean symbol (float32), restricted
  by what z shows, so the denoiser stays a function of z alone (time-free):
    never MASK; no end at position 0 (len >= 1);
    only the end after a visible end (ends run to the last position);
    no end before a visible byte.
  A draw that reveals one position at a time thus always yields the form of
  `diffusion_targets`. (Positions revealed together may disagree, e.g. an end
  before a byte; the first end wins, `diffusion_lengths`.)"""
  L = z.shape[1]
  j = jnp.arange(L)[None, :]
  is_end = z == vocab.END_OF_PATCH
  is_byte = (z != vocab.MASK) & ~is_end
  first_end = jnp.min(jnp.where(is_end, j, L), axis=-1, keepdims=True)  # [rows, 1]
  last_byte = jnp.max(jnp.where(is_byte, j, -1), axis=-1, keepdims=True)
  end_sym = jnp.arange(DEC_VOCAB) == vocab.END_OF_PATCH  # [V]
  end_ok = ((j > 0) & (j > last_byte))[..., None]  # [rows, L, 1]
  allowed = (jnp.arange(DEC_VOCAB) != vocab.MASK) & (end_ok | ~end_sym)
  allowed = jnp.where((j > first_end)[..., None], end_sym, allowed)  # forced end wins
  return jax.nn.log_softmax(jnp.where(allowed, logits.astype(jnp.float32), -1e30), axis=-1)


class DiffusionDecoder(nn.Module):
  """(cond [rows, cond_dim], z [rows, L]) -> log-probs [rows, L, DEC_VOCAB]:
  a bidirectional transformer over the patch's L positions, the latent and a
  learned embedding of the position added to every position, no time input;
  the output constrained by `diffusion_constrain`. One call is one
  intra-patch pass. Why the position embedding beside RoPE: RoPE only
  encodes offsets between tokens, and hidden positions all carry MASK and
  the same latent, so in the all-masked first pass every position would get
  the same prediction (position 0 as position 7: a byte or the end)."""
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  max_patch_len: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embed = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype, name='embed')
    self.position_embed = layers.Embed(self.max_patch_len, self.dim, self.dtype,
                                       name='position_embed')
    self.cond = cond_projection(self.dim, 'cond')
    self.transformer = layers.Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                                          mlp_dim=self.mlp_dim, dtype=self.dtype)
    self.readout = layers.readout(DEC_VOCAB)

  def __call__(self, cond, z):
    positions = jnp.broadcast_to(jnp.arange(z.shape[1], dtype=jnp.int32), z.shape)
    x = (self.embed(z) + self.position_embed(positions)
         + self.cond(cond).astype(self.dtype)[:, None, :])
    segments = jnp.ones(z.shape, jnp.int32)
    mask = layers.attention_mask(segments, segments, causal=False)
    return diffusion_constrain(self.readout(self.transformer(x, mask, positions)), z)


def diffusion_patch_nelbo(decoder_fn, patch_tokens, lengths, key, order_bias: float = 0.0):
  """The intra-patch NELBO, an upper bound on −log p_D(patch | h), per row.

  p_D is the decoder's reverse process in the limit of many steps: it reveals
  y = diffusion_targets(patch) [rows, L] one position at a time in a random
  order σ (Plackett–Luce with weights exp(−β·j), β = order_bias; β = 0
  uniform; `intra_patch`), each from the decoder's prediction. By Jensen over
  σ,

    −log p_D(y | h) ≤ E_σ[ Σ_{k=1..L} −log p_D(y_σk | y_σ<k, h) ] = B(y),

  the continuous-time NELBO of masked diffusion (for β = 0 MDLM's; in general
  its per-position schedule). Estimate: draw σ, then the number revealed
  c ~ U{0..L−1} (stratified over the rows in a random order), S = σ's first
  c; with S̄ the hidden rest and q(j | S) = k_j / Σ_{i ∈ S̄} k_i,

    B̂ = L · Σ_{j ∈ S̄} q(j | S) · −log p_D(y_j | y_S, h)

  averages to B: E over c of L·(1/L)Σ_c, and given S the next revealed is j
  with probability q(j | S). Every hidden position gets a gradient, and the
  weights are at most L (no 1/t to cut, so training and evaluation estimate
  the same bound the same way). β = 0 gives q = 1/|S̄|, the "count masking"
  form of MDLM's bound.

  decoder_fn(z [rows, L]) -> log-probs [rows, L, DEC_VOCAB]. Returns (bound
  [rows] nats, hits [rows, L]: argmax right at a hidden position, valid
  [rows, L]: the hidden positions)."""
  y = diffusion_targets(patch_tokens, lengths)
  rows, L = y.shape
  order_key, count_key = jax.random.split(key)
  rank = intra_patch.reveal_ranks(jax.random.uniform(order_key, (rows, L)), order_bias)
  # Stratified over the rows in a random order: neighbouring rows (the slots of
  # one sequence, or one patch's draws) would otherwise share nearly one count.
  count_key, perm_key = jax.random.split(count_key)
  offset = jax.random.uniform(count_key, ())
  spread = jax.random.permutation(perm_key, rows) / rows
  revealed = jnp.floor(jnp.mod(offset + spread, 1.0) * L).astype(jnp.int32)
  hidden = rank >= revealed[:, None]  # [rows, L], at least one
  log_probs = decoder_fn(jnp.where(hidden, vocab.MASK, y))
  nll = -jnp.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
  weight = L * intra_patch.next_reveal_probs(hidden, order_bias)
  # jnp.where keeps 0 · inf out: a visible position's log-prob may be -inf.
  bound = jnp.sum(jnp.where(hidden, weight * nll, 0.0), axis=-1)
  hits = (jnp.argmax(log_probs, -1) == y) & hidden
  return bound, hits, hidden

"""Local decoders: a slot's latent h_i -> a distribution over whole patches.

A patch is 1..L bytes (L = max_patch_len) and each slot is decoded on its own
row, [batch * slots, ...], so p(patch_i | h_i) sees nothing but h_i.

`ar`: a tiny causal transformer over [START, x_0, .., x_{L-1}] predicting
  [x_0, .., x_{len-1}, END_OF_PATCH]; the end symbol models the length. Position 0
  may not end (len >= 1) and position L must end (len <= L), so the symbols
  sum to one over exactly the patches the patcher can emit lengths for.
`parallel`: x_0 from h; the length from (h, x_0); the other bytes in one
  bidirectional pass given (h, x_0, length): conditionally independent.
`diffusion`: a masked-diffusion model over the patch's L positions,
  `bltdiff.latent.diffusion_decoder`.

Decoder outputs use DEC_VOCAB = 259 symbols (bytes, BOUNDARY, [MASK never],
END_OF_PATCH), indexed like bltdiff.vocab. Drawing patches from these modules
is `bltdiff.latent.decoding`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bltdiff import layers, vocab

DEC_VOCAB = vocab.END_OF_PATCH + 1  # 259: MASK (257) is in range but never allowed
START = vocab.MASK  # input symbol of the first decoder position (never a data byte)


def cond_projection(features, name):
  """The latent h_i projected to the decoder's width (no bias), added at every position."""
  return nn.Dense(features, use_bias=False, kernel_init=nn.with_logical_partitioning(
      nn.initializers.lecun_normal(), ('mlp', 'embed')), name=name)


def ar_targets(patch_tokens, lengths):
  """[rows, L] bytes (PAD filler), [rows] lengths -> targets [rows, L+1]:
  the bytes, END_OF_PATCH at position len, PAD after."""
  rows, L = patch_tokens.shape
  padded = jnp.concatenate([patch_tokens, jnp.full((rows, 1), vocab.PAD, jnp.int32)], axis=1)
  j = jnp.arange(L + 1)[None, :]
  return jnp.where(j == lengths[:, None], vocab.END_OF_PATCH, padded)


def ar_inputs(patch_tokens):
  """[rows, L] -> decoder inputs [rows, L+1]: START then the bytes (teacher forcing)."""
  start = jnp.full(patch_tokens.shape[:1] + (1,), START, jnp.int32)
  return jnp.concatenate([start, patch_tokens], axis=1)


def _allowed_symbols(positions, last: int):
  """bool [..., DEC_VOCAB] allowed at each position (int [...]): never MASK,
  no end at position 0 (len >= 1), only the end at position `last` (len <= L)."""
  sym = jnp.arange(DEC_VOCAB)
  j = positions[..., None]
  allowed = (sym != vocab.MASK)
  allowed = allowed & ~((j == 0) & (sym == vocab.END_OF_PATCH))
  return allowed & ~((j == last) & (sym != vocab.END_OF_PATCH))


def ar_constrain(logits):
  """logits [rows, L+1, DEC_VOCAB] -> log-probs under the constraints of
  `_allowed_symbols` (float32)."""
  L1 = logits.shape[-2]
  allowed = _allowed_symbols(jnp.arange(L1), L1 - 1)[None]
  return jax.nn.log_softmax(jnp.where(allowed, logits.astype(jnp.float32), -1e30), axis=-1)


def ar_constrain_at(logits, position, max_patch_len: int):
  """logits [rows, DEC_VOCAB] of one position (int32 []) -> constrained log-probs."""
  allowed = _allowed_symbols(position, max_patch_len)[None]
  return jax.nn.log_softmax(jnp.where(allowed, logits.astype(jnp.float32), -1e30), axis=-1)


class ARDecoder(nn.Module):
  """(cond [rows, cond_dim], inputs [rows, L+1]) -> log-probs [rows, L+1, DEC_VOCAB].

  With decode=True the same parameters run one position at a time (`step`)
  with a key/value cache, so drawing a patch costs L+1 positions, not
  (L+1)^2; the cache's length is fixed by an `init` call on [rows, L+1]."""
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  max_patch_len: int
  dtype: jnp.dtype = jnp.float32
  decode: bool = False

  def setup(self):
    self.embed = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype, name='embed')
    self.cond = cond_projection(self.dim, 'cond')
    self.transformer = layers.Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                                          mlp_dim=self.mlp_dim, dtype=self.dtype,
                                          decode=self.decode)
    self.readout = layers.readout(DEC_VOCAB)

  def __call__(self, cond, inputs):
    x = self.embed(inputs) + self.cond(cond).astype(self.dtype)[:, None, :]
    segments = jnp.ones(inputs.shape, jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)
    mask = layers.attention_mask(segments, segments, causal=True)
    x = self.transformer(x, mask, positions, segments=segments)
    return ar_constrain(self.readout(x))

  def step(self, cond, inputs, position):
    """One cached position: cond [rows, cond_dim], inputs [rows, 1] (the symbol
    before `position`: START at 0), position int32 [] -> log-probs [rows, DEC_VOCAB]."""
    x = self.embed(inputs) + self.cond(cond).astype(self.dtype)[:, None, :]
    segments = jnp.ones(inputs.shape, jnp.int32)
    positions = jnp.full(inputs.shape, position, jnp.int32)
    x = self.transformer(x, None, positions, segments=segments)
    return ar_constrain_at(self.readout(x)[:, 0], position, self.max_patch_len)


def ar_patch_log_prob(log_probs, patch_tokens, lengths):
  """log p(patch) [rows] and per-position argmax hits [rows, L+1] (valid positions only)."""
  targets = ar_targets(patch_tokens, lengths)
  valid = jnp.arange(targets.shape[1])[None, :] <= lengths[:, None]
  lp = jnp.take_along_axis(log_probs, jnp.clip(targets, 0, DEC_VOCAB - 1)[..., None], -1)[..., 0]
  hits = (jnp.argmax(log_probs, -1) == targets) & valid
  return jnp.sum(jnp.where(valid, lp, 0.0), axis=-1), hits, valid


class ParallelDecoder(nn.Module):
  """First byte and length from the latent, the other bytes in one pass.

  Methods return log-probs: first(cond) [rows, 257], length(cond, x0) [rows, L]
  (index = length - 1), rest(cond, x0, lengths) [rows, L, 257] (position 0 unused)."""
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  max_patch_len: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.cond = cond_projection(self.dim, 'cond')
    self.first_norm = layers.RMSNorm(dtype=self.dtype)
    self.first_head = layers.readout(vocab.NUM_DATA_SYMBOLS, name='first_head')
    self.byte_embed = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype)
    self.length_mlp = layers.SwiGLU(self.mlp_dim, self.dtype)
    self.length_norm = layers.RMSNorm(dtype=self.dtype)
    self.length_head = layers.readout(self.max_patch_len, name='length_head')
    self.length_embed = layers.Embed(self.max_patch_len + 1, self.dim, self.dtype)
    self.position_embed = layers.Embed(self.max_patch_len, self.dim, self.dtype)
    self.transformer = layers.Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                                          mlp_dim=self.mlp_dim, dtype=self.dtype)
    self.rest_head = layers.readout(vocab.NUM_DATA_SYMBOLS, name='rest_head')

  def first(self, cond):
    logits = self.first_head(self.first_norm(self.cond(cond).astype(self.dtype)))
    return jax.nn.log_softmax(logits, -1)

  def length(self, cond, x0):
    h = self.cond(cond).astype(self.dtype) + self.byte_embed(x0)
    h = h + self.length_mlp(self.length_norm(h))
    return jax.nn.log_softmax(self.length_head(self.length_norm(h)), -1)

  def rest(self, cond, x0, lengths):
    rows, L = cond.shape[0], self.max_patch_len
    j = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (rows, L))
    h = (self.cond(cond).astype(self.dtype) + self.byte_embed(x0)
         + self.length_embed(lengths))[:, None, :] + self.position_embed(j)
    segments = (j < lengths[:, None]).astype(jnp.int32)
    mask = layers.attention_mask(segments, segments, causal=False)
    h = self.transformer(h, mask, j)
    return jax.nn.log_softmax(self.rest_head(h), -1)

  def __call__(self, cond, patch_tokens, lengths):
    """Teacher-forced log-probs of the three parts (init traces every parameter)."""
    x0 = jnp.clip(patch_tokens[:, 0], 0, vocab.NUM_DATA_SYMBOLS - 1)
    return self.first(cond), self.length(cond, x0), self.rest(cond, x0, lengths)


def parallel_patch_log_prob(parts, patch_tokens, lengths):
  """log p(patch) [rows] and per-position hits [rows, L+1] (first byte, length
  at position 0 and 1.., as [x0, len, x1..x_{L-1}]) with their valid mask."""
  first, length, rest = parts
  rows, L = patch_tokens.shape
  x = jnp.clip(patch_tokens, 0, vocab.NUM_DATA_SYMBOLS - 1)
  lp_first = jnp.take_along_axis(first, x[:, :1], -1)[:, 0]
  lp_len = jnp.take_along_axis(length, jnp.clip(lengths - 1, 0, L - 1)[:, None], -1)[:, 0]
  lp_rest = jnp.take_along_axis(rest, x[..., None], -1)[..., 0]  # [rows, L]
  inside = (jnp.arange(L)[None, :] >= 1) & (jnp.arange(L)[None, :] < lengths[:, None])
  total = lp_first + lp_len + jnp.sum(jnp.where(inside, lp_rest, 0.0), -1)
  hits = jnp.concatenate([
      (jnp.argmax(first, -1) == x[:, 0])[:, None],
      (jnp.argmax(length, -1) == lengths - 1)[:, None],
      (jnp.argmax(rest, -1) == x)[:, 1:] & inside[:, 1:]], axis=1)
  valid = jnp.concatenate([jnp.ones((rows, 2), bool), inside[:, 1:]], axis=1)
  return total, hits, valid

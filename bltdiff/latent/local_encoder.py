"""BLT's local encoder: the bytes of each patch -> one vector per patch.

Works in the [batch * slots, max_patch_len] layout, one row per patch slot, so
nothing can flow between patches: attention, hash n-grams and pooling all stay
inside a row. That is what lets latent MDLM hide a masked patch completely (its
row is blanked before encoding and its output replaced by a mask vector).

  byte embedding + hash n-gram embeddings (n = 3..8, within the patch)
  -> small bidirectional transformer over the patch's bytes
  -> cross-attention pooling: k queries per patch, outputs concatenated
  -> Dense to the latent width.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bltdiff import layers, vocab

_HASH_PRIME = 1_000_000_007  # BLT's rolling-hash multiplier (mod 2**32 here)
_OUTSIDE = 263  # stand-in for a position before the patch start: no vocab symbol


def ngram_hashes(tokens, n: int):
  """Rolling hash of the n bytes ending at each position, counted inside the patch.

  tokens: int32 [rows, max_patch_len] (one patch per row) -> uint32 [rows, max_patch_len].
  Positions before the patch start hash as _OUTSIDE, so the hash of byte j
  depends only on bytes j-n+1..j of the same patch ("hashed within the patch")."""
  h = jnp.zeros(tokens.shape, jnp.uint32)
  prime = jnp.uint32(_HASH_PRIME)
  for k in range(n):  # byte j-k, shifted right by k inside the row
    shifted = jnp.pad(tokens, ((0, 0), (k, 0)), constant_values=_OUTSIDE)[:, :tokens.shape[1]]
    h = h * prime + shifted.astype(jnp.uint32)
  return h


class HashNgramEmbed(nn.Module):
  """Sum over n of a bucketed embedding of each position's n-gram hash (BLT)."""
  ngram_sizes: Sequence[int]
  num_buckets: int
  dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    """tokens [rows, L] -> [rows, L, dim]."""
    out = 0.0
    for n in self.ngram_sizes:
      bucket = (ngram_hashes(tokens, n) % jnp.uint32(self.num_buckets)).astype(jnp.int32)
      out = out + layers.Embed(self.num_buckets, self.dim, self.dtype, name=f'hash_{n}')(bucket)
    # Normal(0, 1) tables summed over len(ngram_sizes) tables: rescale to unit scale.
    return out / jnp.sqrt(float(len(self.ngram_sizes)))


class LocalEncoder(nn.Module):
  """patch bytes [batch, slots, L] (PAD filler) -> patch vectors [batch, slots, out_dim].

  Slots whose row is all PAD (padding slots, masked slots) still give a vector;
  the caller replaces it."""
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  out_dim: int
  pool_queries: int = 2
  ngram_sizes: Sequence[int] = (3, 4, 5, 6, 7, 8)
  hash_buckets: int = 4096
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, patch_tokens):
    b, p, L = patch_tokens.shape
    rows = patch_tokens.reshape(b * p, L)
    valid = rows != vocab.PAD  # [rows, L]
    x = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype, name='byte_embed')(rows)
    if self.ngram_sizes:
      x = x + HashNgramEmbed(tuple(self.ngram_sizes), self.hash_buckets, self.dim, self.dtype,
                             name='ngram_embed')(rows)
    segments = valid.astype(jnp.int32)  # 1 inside the patch; 0 = PAD attends to itself only
    positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), rows.shape)
    mask = layers.attention_mask(segments, segments, causal=False)
    x = layers.Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                           mlp_dim=self.mlp_dim, dtype=self.dtype, name='transformer')(x, mask, positions)

    # Pooling (BLT): k learned queries, each offset by the patch's mean byte
    # state so the queries are patch-specific, cross-attend to the patch bytes.
    k = self.pool_queries
    count = jnp.maximum(valid.sum(-1, keepdims=True), 1).astype(x.dtype)
    mean = jnp.sum(jnp.where(valid[..., None], x, 0.0), axis=1) / count  # [rows, dim]
    queries = self.param('pool_queries', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, 'embed')), (k, self.dim), jnp.float32)
    q = queries.astype(self.dtype)[None] + mean[:, None, :]  # [rows, k, dim]
    # Every query sees the patch's bytes; position 0 is always allowed so an
    # all-PAD row has a non-empty softmax (its output is discarded by the caller).
    kv_ok = valid | (jnp.arange(L) == 0)[None, :]
    kv_mask = jnp.broadcast_to(kv_ok[:, None, None, :], (b * p, 1, k, L))
    q_pos = jnp.zeros((b * p, k), jnp.int32)  # unused: cross-attention has no RoPE
    q_norm = layers.RMSNorm(dtype=self.dtype, name='pool_norm')(q)
    pooled = q + layers.Attention(self.num_heads, self.dim // self.num_heads, self.dtype,
                                  name='pool_attn')(q_norm, kv_mask, q_pos, kv=x)
    pooled = pooled.reshape(b, p, k * self.dim)  # concatenate the k query outputs
    out = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype,
                   kernel_init=nn.with_logical_partitioning(
                       nn.initializers.lecun_normal(), ('mlp', 'embed')),
                   name='to_latent')(pooled)
    return layers.constrain(out, ('act_batch', 'act_length', 'act_embed'))

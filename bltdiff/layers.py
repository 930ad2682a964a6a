"""Transformer building blocks shared by every model (Flax Linen).

Every parameter carries logical axis names (MaxText style) so that the mesh
rules in `bltdiff.sharding` decide placement; on one device the names are inert.
Logical parameter axes: 'vocab', 'embed', 'heads', 'kv', 'mlp'.
Logical activation axes: 'act_batch', 'act_length', 'act_embed', 'act_heads', 'act_mlp'.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
_DENSE_INIT = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


def constrain(x, axes):
  """Activation sharding hint; a no-op outside a mesh with logical rules."""
  return nn.with_logical_constraint(x, axes)


class RMSNorm(nn.Module):
  eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * scale).astype(self.dtype)


def rope(x, positions, max_wavelength: float = 10_000.0):
  """Rotary position embedding.

  Args:
    x: [batch, length, heads, head_dim] (head_dim even).
    positions: int [batch, length] position of each element (slot index for patches).
  """
  half = x.shape[-1] // 2
  freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions.astype(jnp.float32)[..., None, None] * freq  # [b, l, 1, half]
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attention_mask(q_segments, kv_segments, *, causal: bool, window: int = 0,
                   q_positions=None, kv_positions=None):
  """Boolean mask [batch, 1, q_len, kv_len]: True where a query may attend.

  Segments: int [batch, len]; 0 marks padding (attends and is attended by nothing
  but itself, so softmax never sees an empty row). Queries only see keys of the
  same segment, which is how sequences stop at document or patch boundaries.
  `window` > 0 bounds how far back a causal query looks (sliding window).
  """
  same = q_segments[:, :, None] == kv_segments[:, None, :]
  valid = (q_segments[:, :, None] > 0) & (kv_segments[:, None, :] > 0)
  mask = same & valid
  if q_positions is None:
    q_positions = jnp.broadcast_to(jnp.arange(q_segments.shape[1]), q_segments.shape)
  if kv_positions is None:
    kv_positions = jnp.broadcast_to(jnp.arange(kv_segments.shape[1]), kv_segments.shape)
  delta = q_positions[:, :, None] - kv_positions[:, None, :]
  if causal:
    mask &= delta >= 0
  if window > 0:
    mask &= delta < window
  # Padding queries attend to themselves only; their outputs are ignored anyway.
  diag = (q_positions[:, :, None] == kv_positions[:, None, :]) & (q_segments[:, :, None] == 0)
  return (mask | diag)[:, None, :, :]


class Attention(nn.Module):
  """Multi-head attention with RoPE and an explicit boolean mask.

  With `decode=True` it keeps a key/value cache (collection 'cache') so causal
  generation costs one position per call.
  """
  num_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  decode: bool = False
  window: int = 0  # only read in decode mode; full passes get it through `mask`

  @nn.compact
  def __call__(self, x, mask, positions, kv=None, segments=None, only_last: int = 0):
    """x: [batch, length, embed]; kv: optional [batch, kv_len, embed] (cross-attention,
    no RoPE); mask: bool [batch, 1, length, kv_len]; positions: int [batch, length];
    segments: int [batch, length], read in decode mode to keep documents apart.
    only_last > 0: only x's last only_last tokens query (self-attention over all
    of x); the output is theirs alone, [batch, only_last, embed]."""
    dense = lambda name, axes: nn.DenseGeneral(
        features=(self.num_heads, self.head_dim), use_bias=False, dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(_DENSE_INIT, axes), name=name)
    if only_last and self.decode:  # the cache writes every position's key: one token a call
      raise ValueError('Attention: only_last is for full passes, not decode mode')
    cross = kv is not None
    kv_in = kv if cross else x
    asking = slice(-only_last, None) if only_last else slice(None)
    q = dense('query', ('embed', 'heads', 'kv'))(x[:, asking])
    k = dense('key', ('embed', 'heads', 'kv'))(kv_in)
    v = dense('value', ('embed', 'heads', 'kv'))(kv_in)
    mask = mask if mask is None else mask[:, :, asking]
    if not cross:
      q, k = rope(q, positions[:, asking]), rope(k, positions)
    q = constrain(q, ('act_batch', 'act_length', 'act_heads', None))
    if self.decode:
      k, v, mask = self._update_cache(k, v, positions, segments, mask)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return nn.DenseGeneral(
        features=x.shape[-1], axis=(-2, -1), use_bias=False, dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(_DENSE_INIT, ('heads', 'kv', 'embed')),
        name='out')(out)

  def _update_cache(self, k, v, positions, segments, mask):
    """Writes k, v [batch, 1, heads, head_dim] at `positions` (the same for the
    whole batch) into a cache whose length was fixed by an init call with the
    full-length input; returns the cache and the mask of what the query may see."""
    is_init = not self.has_variable('cache', 'cached_key')
    cached_k = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
    cached_v = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
    cached_seg = self.variable('cache', 'cached_segment', jnp.zeros, k.shape[:2], jnp.int32)
    if is_init:
      return k, v, mask
    index = positions[0, 0].astype(jnp.int32)
    zero = jnp.zeros((), jnp.int32)  # explicit: samplers trace with x64 enabled
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (zero, index, zero, zero))
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (zero, index, zero, zero))
    cached_seg.value = jax.lax.dynamic_update_slice(
        cached_seg.value, segments.astype(jnp.int32), (zero, index))
    key_pos = jnp.arange(cached_seg.value.shape[1], dtype=jnp.int32)
    visible = (key_pos <= index)[None, :] & (cached_seg.value == segments[:, :1])
    if self.window > 0:
      visible &= (index - key_pos < self.window)[None, :]
    return cached_k.value, cached_v.value, visible[:, None, None, :]


class SwiGLU(nn.Module):
  hidden_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda features, axes, name: nn.Dense(
        features, use_bias=False, dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(_DENSE_INIT, axes), name=name)
    gate = dense(self.hidden_dim, ('embed', 'mlp'), 'gate')(x)
    up = dense(self.hidden_dim, ('embed', 'mlp'), 'up')(x)
    h = constrain(nn.silu(gate) * up, ('act_batch', 'act_length', 'act_mlp'))
    return dense(x.shape[-1], ('mlp', 'embed'), 'down')(h)


class BlockSettings(nn.Module):
  """The settings of a transformer block, shared by `TransformerBlock` and the
  `Transformer` stack that builds its blocks from them."""
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  decode: bool = False
  cross_attention: bool = False
  dropout: float = 0.0
  window: int = 0


class TransformerBlock(BlockSettings):
  """Pre-norm block: self-attention (+ optional cross-attention) then SwiGLU."""

  @nn.compact
  def __call__(self, x, mask, positions, *, kv=None, kv_mask=None, segments=None,
               deterministic=True, only_last: int = 0):
    """only_last > 0: the block's output for x's last only_last tokens alone
    (they attend to all of x): the last block of a stack whose other outputs
    nobody reads."""
    head_dim = x.shape[-1] // self.num_heads
    drop = nn.Dropout(self.dropout, deterministic=deterministic)
    h = Attention(self.num_heads, head_dim, self.dtype, self.decode, self.window,
                  name='self_attn')(
        RMSNorm(dtype=self.dtype, name='attn_norm')(x), mask, positions, segments=segments,
        only_last=only_last)
    if only_last:
      x, positions = x[:, -only_last:], positions[:, -only_last:]
      kv_mask = kv_mask if kv_mask is None else kv_mask[:, :, -only_last:]
    x = x + drop(h)
    if self.cross_attention:
      h = Attention(self.num_heads, head_dim, self.dtype, name='cross_attn')(
          RMSNorm(dtype=self.dtype, name='cross_norm')(x), kv_mask, positions, kv=kv)
      x = x + drop(h)
    h = SwiGLU(self.mlp_dim, self.dtype, name='mlp')(RMSNorm(dtype=self.dtype, name='mlp_norm')(x))
    x = x + drop(h)
    return constrain(x, ('act_batch', 'act_length', 'act_embed'))


class Transformer(BlockSettings):
  """num_layers blocks with a final norm: [batch, length, embed] -> same.
  Construct with keywords: Transformer(num_layers=..., num_heads=..., mlp_dim=...)."""
  num_layers: int = 1

  @nn.compact
  def __call__(self, x, mask, positions, *, kv=None, kv_mask=None, segments=None,
               deterministic=True, only_last: int = 0):
    """only_last > 0: the output of x's last only_last tokens alone, [batch,
    only_last, embed] (the last block computes no other token's)."""
    settings = {f: getattr(self, f) for f in ('num_heads', 'mlp_dim', 'dtype', 'decode',
                                              'cross_attention', 'dropout', 'window')}
    for i in range(self.num_layers):
      x = TransformerBlock(**settings, name=f'block_{i}')(
          x, mask, positions, kv=kv, kv_mask=kv_mask, segments=segments,
          deterministic=deterministic, only_last=only_last if i == self.num_layers - 1 else 0)
    return RMSNorm(dtype=self.dtype, name='final_norm')(x)


class Embed(nn.Module):
  """Token embedding [batch, length] -> [batch, length, dim] with a tied-free readout."""
  num_embeddings: int
  dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    table = self.param('embedding', nn.with_logical_partitioning(
        nn.initializers.normal(stddev=1.0), ('vocab', 'embed')),
                       (self.num_embeddings, self.dim), jnp.float32)
    x = jnp.take(table, tokens, axis=0).astype(self.dtype)
    return constrain(x, ('act_batch', 'act_length', 'act_embed'))


def readout(features: int, dtype: Dtype = jnp.float32, name: str = 'readout'):
  """Final projection to logits; kept in float32 for a stable softmax."""
  return nn.Dense(features, use_bias=False, dtype=jnp.float32,
                  kernel_init=nn.with_logical_partitioning(_DENSE_INIT, ('embed', 'vocab')),
                  name=name)

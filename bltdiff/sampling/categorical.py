"""Categorical draws for samplers: float64 Gumbel noise or an inverted CDF, and
nucleus filtering.

Categorical draws use float64 noise (Gumbel per symbol, or one uniform per draw
through the inverted CDF): float32 noise truncates the tail of the Gumbel
distribution, which silently lowers the sampling temperature and fakes a good
generative perplexity (Zheng et al. 2024). Run the jitted sampler
under `with jax.enable_x64(True):` (see `run_with_x64`) so float64 exists inside it.
"""

import jax
import jax.numpy as jnp


def run_with_x64(fn, *args, **kwargs):
  """Calls a jitted sampler with 64-bit types enabled for its trace only."""
  with jax.enable_x64(True):
    return fn(*args, **kwargs)


def row_uniform(key, shape, rows=None):
  """Uniform noise in (0, 1) of `shape` [k, ...], float64 when x64 is enabled.
  With rows (int [k]), the k rows are rows of a larger batch: row r's noise
  comes from its own key fold_in(key, r), so drawing a gathered subset gives
  exactly the whole batch's draws, and costs the k rows' noise only (not the
  whole batch's: a sampler step that reveals 60 of 3840 slot rows would
  otherwise draw 64x the noise it uses, which dominated its wall time)."""
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  uniform = lambda k, s: jax.random.uniform(k, s, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
  if rows is None:
    return uniform(key, tuple(shape))
  return jax.vmap(lambda r: uniform(jax.random.fold_in(key, r), tuple(shape[1:])))(rows)


def gumbel_argmax(key, log_probs, rows=None):
  """One categorical draw per row of log_probs [..., vocab] -> int32 [...].

  The noise is float64 when x64 is enabled (as inside `run_with_x64`); rows
  as `row_uniform`."""
  u = row_uniform(key, log_probs.shape, rows)
  gumbel = -jnp.log(-jnp.log(u))
  return jnp.argmax(log_probs.astype(u.dtype) + gumbel, axis=-1).astype(jnp.int32)


def inverse_cdf_draw(key, log_probs, rows=None):
  """One categorical draw per row of log_probs [..., vocab] -> int32 [...], by
  inverting the CDF: the first symbol whose cumulative probability reaches
  u·total for one uniform u per draw. The same law as `gumbel_argmax`, from
  one uniform per draw instead of one per symbol: the local decoders draw
  every position of a patch each pass, and there the vocab-wide float64 noise
  took about a third of a speculative sampler's wall time. Float64 under x64
  like the Gumbel noise (a float32 u would cut the tail at 2^-24); a symbol of
  probability 0 is never drawn. rows as `row_uniform`."""
  u = row_uniform(key, log_probs.shape[:-1], rows)
  cdf = blocked_cumsum(jnp.exp(log_probs.astype(u.dtype)))
  below = jnp.sum(cdf < u[..., None] * cdf[..., -1:], axis=-1)
  return jnp.minimum(below, log_probs.shape[-1] - 1).astype(jnp.int32)


def blocked_cumsum(x, block: int = 16):
  """Cumulative sum over the last axis of x [..., V] by blocks of `block`:
  within each block and over the block totals by small triangular matmuls.
  Why not jnp.cumsum: on CPU it lowers to a scan that, inside the samplers'
  loops over large row buffers, took XLA minutes to compile."""
  v = x.shape[-1]
  n = -(-v // block)
  blocks = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n * block - v)]).reshape(
      x.shape[:-1] + (n, block))
  inner = blocks @ jnp.triu(jnp.ones((block, block), x.dtype))  # within each block
  offsets = jnp.sum(blocks, -1) @ jnp.triu(jnp.ones((n, n), x.dtype), 1)  # blocks before
  return (inner + offsets[..., None]).reshape(x.shape[:-1] + (n * block,))[..., :v]


def top_p_filter(log_probs, top_p: float):
  """Nucleus filtering of log_probs [..., vocab]: keeps the smallest set of
  symbols whose probability reaches top_p (always at least the most likely)."""
  if top_p >= 1.0:
    return log_probs
  sorted_lp = jnp.sort(log_probs, axis=-1)[..., ::-1]
  cum = jnp.cumsum(jnp.exp(sorted_lp), axis=-1)
  # The cut-off is the smallest kept log-prob: all symbols before cum reaches top_p.
  keep_count = jnp.sum(cum - jnp.exp(sorted_lp) < top_p, axis=-1, keepdims=True)
  cutoff = jnp.take_along_axis(sorted_lp, jnp.maximum(keep_count - 1, 0), axis=-1)
  filtered = jnp.where(log_probs >= cutoff, log_probs, -jnp.inf)
  return jax.nn.log_softmax(filtered, axis=-1)


def entropy_of(log_probs):
  """Entropy (nats) of categoricals log_probs [..., vocab] -> [...]; -inf entries
  (filtered or forbidden symbols) contribute 0."""
  p = jnp.exp(log_probs)
  return -jnp.sum(jnp.where(p > 0, p * log_probs, 0.0), axis=-1)

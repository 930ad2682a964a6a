"""Run a row-wise function on the selected rows only, with static shapes.

A sampler step reveals a few slots of many, and the local decoder and encoder
work on each slot's row alone, so only the revealed rows need them. Under jit
shapes are static, so the selected rows are gathered into a buffer of one of a
few fixed sizes (a ladder of halvings of the row count: N/16, N/8, ..., N),
the smallest that holds them; `lax.switch` runs only that branch (none when
no row is selected), and the results are scattered back. The largest size is
every row, so the answer is exact whatever the count. Rows not selected get
`fill`.
"""

import jax
import jax.numpy as jnp

LADDER_HALVINGS = 4  # buffers of N/16 ... N/2 rows, then all N
# A ladder inside each branch of another (the intra-patch loop in the decoder's
# buffers): N/4, N/2, N. Every rung compiles fn again, and a process maps each
# compiled kernel (Linux allows 65530 maps): a `diffusion` decoder's sampler
# maps ~3.1-3.9k with 4 here, ~2.6-3.1k with 2 (`latent.sampling.compiled_sampler`).
NESTED_LADDER_HALVINGS = 2


def capacities(num_rows: int, halvings: int | None = None) -> tuple[int, ...]:
  """The buffer sizes for num_rows rows, ascending, the last = num_rows
  (halvings: rungs below num_rows; None: LADDER_HALVINGS, read at the call)."""
  halvings = LADDER_HALVINGS if halvings is None else halvings
  sizes = {max(1, num_rows >> k) for k in range(1, halvings + 1)}
  return tuple(sorted(s for s in sizes if s < num_rows)) + (num_rows,)


def map_selected(fn, inputs, select, fill, totals: bool = False, halvings: int | None = None):
  """fn(rows of inputs [k, ...], their indices [k]) -> outputs [k, ...]
  (pytrees), on the rows where select [N] is True. Returns (outputs [N, ...]
  with `fill` (a pytree of scalars) elsewhere, rows processed [] int32).
  totals: fn returns (outputs, totals: a pytree of per-buffer scalars, e.g. a
  count of work done), and so does the result (totals 0 when no row is selected).
  halvings: the ladder's rungs below N (each is a compiled copy of fn: inside
  another map_selected, fewer keep the program small)."""
  n = select.shape[0]
  sizes = capacities(n, halvings)
  count = jnp.sum(select)
  split = (lambda out: out) if totals else (lambda out: (out, ()))

  def branch(size):
    def run():
      if size == n:  # every row: no gather, and the unselected ones are overwritten
        out, sums = split(fn(inputs, jnp.arange(n)))
        out = jax.tree.map(lambda o, f: jnp.where(
            select.reshape((n,) + (1,) * (o.ndim - 1)), o, jnp.asarray(f, o.dtype)), out, fill)
        return out, sums
      index = jnp.nonzero(select, size=size, fill_value=n)[0]  # n: an empty place
      safe = jnp.minimum(index, n - 1)
      out, sums = split(fn(jax.tree.map(lambda x: x[safe], inputs), safe))
      out = jax.tree.map(
          lambda o, f: jnp.full((n,) + o.shape[1:], f, o.dtype).at[index].set(o, mode='drop'),
          out, fill)
      return out, sums
    return run

  def nothing():  # no row selected (a quiet sampler step): no work at all
    out_shapes, sum_shapes = jax.eval_shape(branch(n))
    out = jax.tree.map(lambda s, f: jnp.full(s.shape, f, s.dtype), out_shapes, fill)
    return out, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sum_shapes)

  # 0: nothing; then the smallest size that holds `count`.
  choice = jnp.where(count == 0, 0, 1 + jnp.sum(jnp.asarray(sizes) < count))
  out, sums = jax.lax.switch(choice, [nothing] + [branch(s) for s in sizes])
  processed = jnp.asarray((0,) + sizes, jnp.int32)[choice]
  return ((out, sums) if totals else out), processed

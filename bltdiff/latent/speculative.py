"""Self-speculative intra-patch decoding: the `diffusion` decoder's
left-to-right chain, drawn exactly, in fewer passes than the patch has symbols.

A two-stream decoder (model.dec_two_stream) gives, in one teacher-forced pass
over a full guess z [L] (`DiffusionDecoder.ordered` with ranks 0..L−1), every
conditional of the left-to-right chain at once:

    p_j(·) = p_D(y_j = · | z_<j, h)                            [rows, L, V]

so a pass can check guesses at all positions together, the way speculative
sampling (Leviathan et al. 2023; Chen et al. 2023) checks a draft model's
tokens, with the decoder as its own drafter:

  pass 1    the all-masked pass (`first_pass`, run anyway for Ĥ(p)). Its
            query at position 0 sees nothing, as in the chain, so y_0 drawn
            from it is exact; every other position gets a draft z_j ~ q_j,
            q_j that pass's prediction from no context.
  pass k>1  a check: with s positions settled, position j ≥ s is accepted
            when every position from s to j−1 was and u_j < p_j(z_j)/q_j(z_j);
            the first rejected one, r, is redrawn from the residual
            norm(max(0, p_r − q_r)); positions after r get fresh drafts from
            this pass's p_j (computed from the rejected guess: stale, still
            a fixed distribution when they are drawn), which become their q.
            Settled: r + 1 (all L when nothing is rejected).

Lookahead (model.dec_lookahead = K): the check pass also gives, at every j,
p(y_j | z_<j−d) for d = 1..K, the query that does not see the d symbols
before j. Position r + d's d-th one sees z_<r, the settled prefix, and none
of the rejected guess: the positions r + 1 .. r + K get their fresh drafts
from these (masked diffusion's parallel prediction given what is settled),
the later ones from the stale p_j as above.

Why exact: given the settled prefix y_<j, a draft z_j was drawn from a q_j
(either kind) fixed before its noise, independently of the acceptance draws
before it, so accept-or-resample yields y_j ~ p_j(· | y_<j) (the
speculative-sampling identity min(p, q) + max(0, p − q) = p). Each pass
settles at least one position, so a patch of len bytes costs at most len + 1
passes, the `ar` decoder's count, and fewer when drafts are right. A row
stops when its settled prefix holds an END_OF_PATCH (the rest is forced) or
covers L.

T_steps(p) (`intra_patch`) caps a row's passes: a row stopped by the cap
keeps its last drafts, so α = 0 with T_min = 1 is one-pass decoding and
α → ∞ the exact chain. top_p filters p and q alike, so the draw is exact for
the nucleus-filtered chain.
"""

import jax
import jax.numpy as jnp

from bltdiff import vocab
from bltdiff.latent import slot_gather
from bltdiff.sampling import categorical


def accepted(p, q, drafts, uniform):
  """The speculative-sampling test at every position: p, q log-probs
  [rows, L, V] (the checked conditionals, the drafts' law), drafts [rows, L]
  drawn from q, uniform [rows, L] in (0, 1) -> bool [rows, L]: u < p(x)/q(x)."""
  p_x = jnp.take_along_axis(p, drafts[..., None], -1)[..., 0]
  q_x = jnp.take_along_axis(q, drafts[..., None], -1)[..., 0]
  return jnp.log(uniform) < p_x - q_x


def residual(p, q):
  """log norm(max(0, p − q)) of log-probs [..., V]: the law of a rejected
  draft's replacement (p where it is all zero, which happens only when p = q
  and nothing is rejected). With `accepted`, the draft's final law is p."""
  excess = jnp.maximum(jnp.exp(p) - jnp.exp(q), 0.0)
  mass = jnp.sum(excess, -1, keepdims=True)
  return jnp.where(mass > 0, jnp.log(excess) - jnp.log(jnp.where(mass > 0, mass, 1.0)), p)


def draft_laws(laws, first_rejected, num_positions: int):
  """laws [r, (1+K)·L, V] (a check pass: p, then the K lookahead blocks; L =
  num_positions), first_rejected [r] -> [r, L, V]: the law of each
  position's fresh draft, lookahead block d = j − r at positions r + 1 ..
  r + K (it sees the settled z_<r only), p elsewhere (module doc)."""
  L = num_positions
  if laws.shape[1] == L:  # K = 0: p everywhere, no gather on the check loop
    return laws
  blocks = laws.reshape((laws.shape[0], -1, L) + laws.shape[2:])  # [r, 1+K, L, V]
  offset = jnp.arange(L)[None, :] - first_rejected[:, None]  # [r, L]
  block = jnp.where((offset >= 1) & (offset < blocks.shape[1]), offset, 0)
  return jnp.take_along_axis(blocks, block[:, None, :, None], axis=1)[:, 0]


def settled(z, num_settled):
  """z [rows, L], num_settled [rows] -> bool [rows]: the patch is decided,
  its settled prefix covers L or holds an END_OF_PATCH (the rest is forced)."""
  j = jnp.arange(z.shape[1])[None, :]
  ended = jnp.any((z == vocab.END_OF_PATCH) & (j < num_settled[:, None]), axis=-1)
  return ended | (num_settled >= z.shape[1])


def speculative_draw(first_log_probs, check, steps, key, top_p: float = 1.0, rows=None):
  """Draws each row's patch symbols by self-speculative decoding (module doc).

  first_log_probs [k, L, V]: the all-masked pass; check(z [r, L], index [r])
  -> log-probs [r, (1+K)·L, V] of the left-to-right chain at every position
  given z's prefix, then the K lookahead blocks (module doc; K = 0: none),
  for the buffer rows `index` (any r of the k); steps [k]:
  T_steps(p), the most passes per row (0: the row is not decoded); key: the
  draws' key (the first pass's draw is `fold_in(key, 0)`'s, as in one-pass
  decoding); rows as `categorical.inverse_cdf_draw` (default 0..k−1).
  -> (z [k, L] symbols, bytes then END_OF_PATCH; passes [k] run per row; rows
  check ran, summed []). Each check pass (the decoder and its draws) runs on
  the rows still decoding only, gathered on `slot_gather`'s ladder."""
  k, L = first_log_probs.shape[:2]
  j = jnp.arange(L)[None, :]
  noise_rows = jnp.arange(k) if rows is None else rows
  accept_key, draw_key = jax.random.split(jax.random.fold_in(key, 1))
  q = categorical.top_p_filter(first_log_probs, top_p)
  z = categorical.inverse_cdf_draw(jax.random.fold_in(key, 0), q, noise_rows)
  decoding = steps > 0
  num_settled = jnp.where(decoding, 1, 0).astype(jnp.int32)
  passes = num_settled

  def active(passes, z, num_settled):  # [k]
    return (passes < steps) & ~settled(z, num_settled)

  def check_rows(check_index, z, q, num_settled, index):
    """One check pass on the buffer rows `index` (all still decoding):
    (z, q, num_settled) of those rows -> their updated values."""
    laws = categorical.top_p_filter(check(z, index), top_p)  # [r, (1+K)·L, V]
    p = laws[:, :L]
    uniform = categorical.row_uniform(jax.random.fold_in(accept_key, check_index), z.shape,
                                      noise_rows[index])
    rejected = (j >= num_settled[:, None]) & ~accepted(p, q, z, uniform)
    first_rejected = jnp.min(jnp.where(rejected, j, L), axis=-1)  # [r]; L: none
    # The residual only where it is drawn: at the first rejected position.
    at = jnp.minimum(first_rejected, L - 1)[:, None, None]
    at_rejected = lambda x: jnp.take_along_axis(x, at, axis=1)[:, 0]  # [r, V]
    noise_key = jax.random.fold_in(draw_key, check_index)
    redrawn = categorical.inverse_cdf_draw(jax.random.fold_in(noise_key, 0),
                                           residual(at_rejected(p), at_rejected(q)),
                                           noise_rows[index])
    law = draft_laws(laws, first_rejected, L)
    fresh = categorical.inverse_cdf_draw(jax.random.fold_in(noise_key, 1), law,
                                         noise_rows[index])
    after = j > first_rejected[:, None]
    new_z = jnp.where(after, fresh, z)
    new_z = jnp.where(j == first_rejected[:, None], redrawn[:, None], new_z)
    new_q = jnp.where(after[..., None], law, q)
    return new_z, new_q, jnp.minimum(first_rejected + 1, L).astype(jnp.int32)

  def body(carry):
    check_index, z, q, num_settled, passes, rows_run = carry
    running = active(passes, z, num_settled)
    (new_z, new_q, new_settled), ran = slot_gather.map_selected(
        lambda rows_in, index: check_rows(check_index, *rows_in, index), (z, q, num_settled),
        running, (vocab.MASK, 0.0, 0), halvings=slot_gather.NESTED_LADDER_HALVINGS)
    keep = lambda new, old: jnp.where(running.reshape((k,) + (1,) * (old.ndim - 1)), new, old)
    return (check_index + 1, keep(new_z, z), keep(new_q, q), keep(new_settled, num_settled),
            passes + running.astype(jnp.int32), rows_run + ran)

  _, z, _, _, passes, rows_run = jax.lax.while_loop(
      lambda c: jnp.any(active(c[4], c[1], c[3])), body,
      (jnp.int32(0), z, q, num_settled, passes, jnp.int32(0)))
  return z, passes, rows_run

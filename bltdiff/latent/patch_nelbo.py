"""The intra-patch NELBO of the `diffusion` local decoder: its estimators
(one stream: `diffusion_patch_nelbo`; two streams: `ordered_patch_nll`) and
the entropy head's training term (`entropy_head_fit`), all per row of
patches. What they bound, and the nesting into the latent bound, is
bltdiff/latent/diffusion.py's doc; the decoder is `diffusion_decoder`.
"""

import jax
import jax.numpy as jnp

from bltdiff import vocab
from bltdiff.latent import intra_patch
from bltdiff.latent.diffusion_decoder import diffusion_targets


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


def ordered_patch_nll(ordered_fn, patch_tokens, lengths, key, order_bias: float = 0.0,
                      block_queries: bool = False, lookahead: int = 0):
  """The intra-patch NELBO of two streams, per row: draw one reveal order σ
  (Plackett–Luce, `intra_patch.reveal_ranks`), then

    B̂ = Σ_j −log p_D(y_j | y_i for rank_i < rank_j, h)

  −log of the probability that the reverse process revealing in order σ
  writes y. Its mean over σ is B(y) of `diffusion_patch_nelbo` (the same
  Jensen bound over orders), with no draw of the number revealed: every
  position is a term.

  block_queries: a second query per position that sees only the blocks
  revealed before its own in a T-step draw (T ~ U{1..L−1} per row,
  `block_ranks`): the predictions a sampler with fewer than L steps uses,
  which a near left-to-right order otherwise never trains.

  lookahead = K: K more queries per position, the d-th (d = 1..K) seeing
  the content ranked below rank_j − d (`intra_patch.lookahead_ranks`): y_j
  predicted without the d symbols revealed just before it. Left to right,
  position r + d's d-th query sees y_<r: the drafts self-speculative
  decoding makes for the d positions after a redrawn one (`speculative`).

  The extra queries' NLL comes back as a term whose value is 0 (its gradient
  trains them; the bound is untouched: nothing attends to a query).

  ordered_fn(y [rows, L], rank [rows, L], query_rank [rows, k·L] or None)
  -> log-probs [rows, k·L, DEC_VOCAB] (`DiffusionDecoder.ordered`). Returns
  (bound [rows] nats (+ the zero-valued term), hits [rows, L]: argmax right,
  valid [rows, L]: all positions)."""
  y = diffusion_targets(patch_tokens, lengths)
  order_key, steps_key = jax.random.split(key)
  rows, L = y.shape
  rank = intra_patch.reveal_ranks(jax.random.uniform(order_key, y.shape), order_bias)
  query_rank = intra_patch.lookahead_ranks(rank, lookahead)  # [rows, (1+K)·L]
  if block_queries:
    steps = jax.random.randint(steps_key, (rows,), 1, max(L, 2))
    query_rank = jnp.concatenate([query_rank, block_ranks(rank, steps)], axis=1)
  log_probs = ordered_fn(y, rank, query_rank)
  targets = jnp.tile(y, (1, query_rank.shape[1] // L))
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  bound = jnp.sum(nll[:, :L], axis=-1)
  if query_rank.shape[1] > L:
    bound = bound + gradient_only(jnp.sum(nll[:, L:], axis=-1))
  return bound, jnp.argmax(log_probs[:, :L], -1) == y, jnp.ones(y.shape, bool)


def block_ranks(rank, steps):
  """rank [rows, L], steps T [rows] -> [rows, L]: the number revealed before
  the step that reveals each position, when step k of T reveals ranks
  ⌊k·L/T⌋ .. ⌊(k+1)·L/T⌋ − 1 (`intra_patch.reveal_quota`): ⌊k(r)·L/T⌋ with
  k(r) = ⌈(r+1)·T/L⌉ − 1."""
  L, T = rank.shape[1], steps[:, None]
  block = -((-(rank + 1) * T) // L) - 1
  return (block * L) // T


ENTROPY_HEAD_FIT_SCALE = 1e-3  # see entropy_head_fit


def entropy_head_fit(predicted, bound):
  """The entropy head's training term, to add to the per-row bound [rows]:
  c·(Ĥ − sg(B̂))² − sg(the same). Its value is exactly 0, so the bound and
  every metric stay as they are; its gradient fits Ĥ(p) to the patch's NELBO
  by least squares, whose minimizer given h is E[B̂ | h] ≥ H(patch | h): the
  expected cost of the patch in nats, known before a single pass. Why the
  small c = ENTROPY_HEAD_FIT_SCALE: errors of tens of nats squared would
  dominate the global gradient norm that training clips, shrinking every
  other update; Adam's steps for the head do not depend on c."""
  return gradient_only(ENTROPY_HEAD_FIT_SCALE
                       * jnp.square(predicted - jax.lax.stop_gradient(bound)))


def gradient_only(term):
  """term − sg(term): exactly 0, with term's gradient. Added to the bound, it
  trains what term measures and changes no number the bound reports."""
  return term - jax.lax.stop_gradient(term)

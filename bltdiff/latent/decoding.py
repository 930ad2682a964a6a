"""Drawing patches from the local decoder D: each slot's bytes from its latent h_i.

  PatchDecoder.draw           every row: `ar` byte by byte with a key/value cache
                              (L+1 positions per patch, not (L+1)^2), `parallel`
                              (first byte, length, the rest in one pass), or
                              `diffusion` (T_steps(p) intra-patch denoising passes)
  PatchDecoder.draw_revealed  only the rows a sampler step reveals, gathered into a
                              buffer of static size (`slot_gather`) and scattered back;
                              `ar` and `diffusion` run each pass after the first on
                              the rows still decoding and stop when none is (`ar`:
                              a buffer costs its patches' len + 1 positions)
  PatchDecoder.first_symbol_log_probs   D's first position alone (cheap scores)
  PatchDecoder.entropy_estimate         Ĥ(patch | h_i) per row (adaptive plans)
  PatchDecoder.greedy         the most likely symbol at every position, and the
                              mean log-probability per symbol of that patch (the
                              confidence sampler's score: no draw, no length bias)

`ar` draws with a key/value cache (`cached_ar`). `diffusion` decodes in T_steps(p) passes
(`intra_patch`) by `reveal` (masked diffusion's reverse process) or `speculative`
(the left-to-right chain, drafts checked in parallel; intra_patch.speculative).

Draws are reproducible per row: row r's noise comes from its own key
(`categorical.row_uniform`), so drawing a gathered subset gives exactly the
rows the whole-batch draw gives, for the noise of the gathered rows alone.
Every draw also returns the entropy (nats) of D's distributions along the
drawn path, summed up to the end of the patch: an unbiased estimate of the
patch's entropy H(patch | h_i).
"""

import jax
import jax.numpy as jnp

from bltdiff import vocab
from bltdiff.errors import ConfigError
from bltdiff.latent import cached_ar, slot_gather
from bltdiff.latent.diffusion_decoder import diffusion_lengths
from bltdiff.latent.intra_patch import (EXACT_INTRA_PATCH, IntraPatchRule, lookahead_ranks,
                                        reveal_ranks)
from bltdiff.latent.local_decoder import START, ARDecoder
from bltdiff.latent.reveal import reveal_draw
from bltdiff.latent.speculative import speculative_draw
from bltdiff.sampling import categorical, rules

ENTROPY_ESTIMATE_KEY = 7  # the draw behind `ar`/`parallel` entropy estimates (any fixed key)


class PatchDecoder:
  """D of a `network.LatentDenoiser` (its 'decoder' parameters), for sampling."""

  def __init__(self, net):
    self.mode = net.decoder_mode
    self.max_patch_len = net.max_patch_len
    self.net = net
    if self.mode == 'ar':
      # The same parameters, run one position at a time with a cache.
      self.stepper = ARDecoder(dim=net.dec_dim, num_layers=net.dec_layers,
                               num_heads=net.dec_heads, mlp_dim=net.dec_mlp_dim,
                               max_patch_len=net.max_patch_len, dtype=jnp.dtype(net.dtype),
                               decode=True)

  def _decoder(self, params, fn, *args):
    return self.net.apply({'params': params}, fn, *args,
                          method=lambda module, fn, *a: module.decoder_apply(fn, *a))

  def first_symbol_log_probs(self, params, cond_rows):
    """log-probs of each row's first decoded symbol: cond [rows, D_dec] ->
    [rows, V] (first byte; for `ar` also the end symbol, never allowed there)."""
    if self.mode == 'parallel':
      return self._decoder(params, lambda dec, c: dec.first(c), cond_rows)
    if self.mode == 'diffusion':
      return self.first_pass(params, cond_rows)[:, 0]
    cache = self._empty_cache(cond_rows.shape[0])
    start = jnp.full((cond_rows.shape[0], 1), START, jnp.int32)
    lp, _ = self._ar_step(params, cache, cond_rows, start, jnp.zeros((), jnp.int32))
    return lp

  def draw(self, params, key, cond_rows, top_p: float = 1.0, rows=None,
           intra_patch: IntraPatchRule = EXACT_INTRA_PATCH):
    """cond [k, D_dec] -> (bytes [k, L] PAD after the end, lengths [k], entropy [k]).
    rows: the k rows' indices in a larger batch (their noise; default 0..k−1).
    intra_patch: the `diffusion` decoder's step rule (others ignore it)."""
    rows = jnp.arange(cond_rows.shape[0]) if rows is None else rows
    if self.mode == 'ar':
      return self._draw_ar(params, key, cond_rows, top_p, rows)
    if self.mode == 'diffusion':
      return self._draw_diffusion(params, key, cond_rows, top_p, rows, intra_patch)[:3]
    return self._draw_parallel(params, key, cond_rows, top_p, rows)

  def draw_revealed(self, params, key, cond_rows, reveal, top_p: float = 1.0,
                    intra_patch: IntraPatchRule = EXACT_INTRA_PATCH):
    """Draws for the rows where reveal [N] is True only (`slot_gather`):
    {tokens [N, L], lengths [N] (other rows PAD / 0), decoded []: rows in the
    buffer, steps [N]: the passes each revealed patch needed (0 elsewhere;
    `ar` its len + 1 symbols, `diffusion` its T_steps(p), fewer if complete
    sooner), passes []: sequential decoder passes run on the buffer (the
    largest steps; `parallel` 1), row_passes []: rows the decoder ran, summed
    over its passes (`ar` and `diffusion`: the buffer's first pass, then only
    the rows still decoding: `_draw_ar_running`, `reveal`, `speculative`)}."""
    n, count = cond_rows.shape[0], jnp.sum(reveal)

    def draw_rows(cond, rows):  # -> (outputs per row, rows the decoder ran over all passes)
      k = cond.shape[0]
      if self.mode == 'parallel':
        out, lengths, _ = self._draw_parallel(params, key, cond, top_p, rows)
        return (out, lengths, jnp.ones((k,), jnp.int32)), jnp.int32(k)
      # map_selected pads a gathered buffer at its end (repeating the last row):
      # padding rows decode nothing, so they cannot lengthen the loop.
      valid = reveal[rows] & ((jnp.arange(k) < count) | (k == n))
      if self.mode == 'ar':
        out, lengths, steps, rows_run = self._draw_ar_running(params, key, cond, top_p, rows,
                                                              valid)
      else:
        out, lengths, _, steps, rows_run = self._draw_diffusion(params, key, cond, top_p, rows,
                                                                intra_patch, valid)
      return (out, lengths, steps), rows_run

    ((out, lengths, steps), row_passes), decoded = slot_gather.map_selected(
        draw_rows, cond_rows, reveal, (vocab.PAD, 0, 0), totals=True)
    passes = 1 if self.mode == 'parallel' else jnp.max(steps, initial=0)
    return dict(tokens=out, lengths=lengths, decoded=decoded, steps=steps, passes=passes,
                row_passes=row_passes)

  def greedy(self, params, cond_rows):
    """cond [k, D_dec] -> (bytes [k, L] PAD after the end, lengths [k], mean
    log-probability per symbol [k]) of each row's greedy patch: the most likely
    symbol at each position given the ones before (`ar`), or the most likely
    first byte, then length, then other bytes (`parallel`).

    The mean runs over the patch's len + 1 symbols (its bytes and the end, or
    for `parallel` the first byte, the length and the other bytes), so it
    measures how sure D is per decision whatever the length: a predictable
    4-byte patch ("tion") scores above a surprising 1-byte one, and the score
    is the same every time (no random draw behind it)."""
    if self.mode == 'ar':
      return self._greedy_ar(params, cond_rows)
    if self.mode == 'diffusion':
      return self._greedy_diffusion(params, cond_rows)
    return self._greedy_parallel(params, cond_rows)

  # --- `ar`: a causal decoder with a key/value cache ---------------------------

  def _empty_cache(self, rows: int):
    shapes = jax.eval_shape(lambda: self.stepper.init(
        jax.random.PRNGKey(0), jnp.zeros((rows, self.net.dec_dim), jnp.float32),
        jnp.zeros((rows, self.max_patch_len + 1), jnp.int32))['cache'])
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def _ar_step(self, params, cache, cond, inputs, position):
    lp, updated = self.stepper.apply({'params': params['decoder'], 'cache': cache}, cond,
                                     inputs, position, method=ARDecoder.step,
                                     mutable=['cache'])
    return lp, updated['cache']

  def _ar_stepper(self, params, cond):
    """step(cache, index, inputs, position) of `cached_ar`: rows `index` of cond (None: all)."""
    return lambda cache, index, inputs, j: self._ar_step(
        params, cache, cond if index is None else cond[index], inputs, j)

  @staticmethod
  def _ar_pick(key, top_p, rows):
    """pick(log-probs [r, V], position, index [r] or None: all) drawing the buffer
    rows' symbols, position j with `fold_in(key, j)`, row r's noise its own."""
    return lambda lp, j, index: categorical.inverse_cdf_draw(
        jax.random.fold_in(key, j), categorical.top_p_filter(lp, top_p),
        rows if index is None else rows[index])

  def _decode_ar(self, params, cond, pick):
    """All L + 1 positions on every row (`cached_ar.decode_every_position`)."""
    k = cond.shape[0]
    return cached_ar.decode_every_position(self._ar_stepper(params, cond), pick,
                                           self._empty_cache(k), k, self.max_patch_len)

  def _draw_ar(self, params, key, cond, top_p, rows):
    drawn, length, entropy, _ = self._decode_ar(params, cond, self._ar_pick(key, top_p, rows))
    return drawn, length, entropy

  def _greedy_ar(self, params, cond):
    pick = lambda lp, j, index: jnp.argmax(lp, axis=-1).astype(jnp.int32)
    chosen, length, _, total = self._decode_ar(params, cond, pick)
    return chosen, length, total / (length + 1).astype(jnp.float32)

  def _draw_ar_running(self, params, key, cond, top_p, rows, valid):
    """`_draw_ar`'s draws of the `valid` rows, stopping early (`cached_ar.draw_running`)."""
    return cached_ar.draw_running(self._ar_stepper(params, cond), self._ar_pick(key, top_p, rows),
                                  self._empty_cache(cond.shape[0]), valid, self.max_patch_len)

  # --- `parallel`: first byte, length, then the rest in one pass ----------------

  def _draw_parallel(self, params, key, cond, top_p, rows):
    keys = jax.random.split(key, 3)
    pick = lambda part, lp: categorical.inverse_cdf_draw(
        keys[part], categorical.top_p_filter(lp, top_p), rows)
    out, lengths, entropy, _ = self._decode_parallel(params, cond, pick)
    return out, lengths, entropy

  def _greedy_parallel(self, params, cond):
    pick = lambda part, lp: jnp.argmax(lp, axis=-1).astype(jnp.int32)
    out, lengths, _, total = self._decode_parallel(params, cond, pick)
    return out, lengths, total / (lengths + 1).astype(jnp.float32)

  def _decode_parallel(self, params, cond, pick):
    """pick(part, log-probs [..., V]) -> symbols chooses the first byte (part 0),
    the length (1) and the other bytes (2): (bytes [k, L] PAD after the end,
    lengths [k], entropy of the distributions used [k], log-prob of the patch [k])."""
    chosen_lp = lambda lp, x: jnp.take_along_axis(lp, x[..., None], -1)[..., 0]
    first_lp = self._decoder(params, lambda dec, c: dec.first(c), cond)
    x0 = pick(0, first_lp)
    length_lp = self._decoder(params, lambda dec, c, x: dec.length(c, x), cond, x0)
    length_index = pick(1, length_lp)
    lengths = length_index + 1
    rest_lp = self._decoder(params, lambda dec, *a: dec.rest(*a), cond, x0, lengths)
    rest = pick(2, rest_lp)
    L = rest.shape[1]
    j = jnp.arange(L)[None, :]
    inside = (j >= 1) & (j < lengths[:, None])
    entropy = (categorical.entropy_of(first_lp) + categorical.entropy_of(length_lp)
               + jnp.sum(jnp.where(inside, categorical.entropy_of(rest_lp), 0.0), -1))
    total = (chosen_lp(first_lp, x0) + chosen_lp(length_lp, length_index)
             + jnp.sum(jnp.where(inside, chosen_lp(rest_lp, rest), 0.0), -1))
    out = jnp.where(j == 0, x0[:, None], rest)
    return (jnp.where(j < lengths[:, None], out, vocab.PAD).astype(jnp.int32), lengths, entropy,
            total)

  # --- `diffusion`: T_steps(p) masked-diffusion passes ---------------------------

  def denoise_patch(self, params, cond_rows, z, rank=None):
    """One intra-patch pass: cond [rows, D_dec], z [rows, L] (rank [rows, L]: the visible
    ones' reveal order, read by two streams) -> log-probs [rows, L, DEC_VOCAB]."""
    return self._decoder(params, lambda dec, c, x, r: dec(c, x, r), cond_rows, z, rank)

  def first_pass(self, params, cond_rows):
    """The all-masked pass: cond [rows, D_dec] -> log-probs [rows, L, DEC_VOCAB]."""
    z = jnp.full((cond_rows.shape[0], self.max_patch_len), vocab.MASK, jnp.int32)
    return self.denoise_patch(params, cond_rows, z)

  def entropy_estimate(self, params, cond_rows, first=None):
    """Ĥ(patch | h) per row [rows] (nats): `diffusion` its entropy head's, else the summed
    entropy of its first pass `first` (module doc); others the entropy along a draw."""
    if self.mode == 'diffusion' and self.net.dec_entropy_head:
      return self._decoder(params, lambda dec, c: dec.patch_entropy(c), cond_rows)
    if self.mode == 'diffusion':
      first = self.first_pass(params, cond_rows) if first is None else first
      return jnp.sum(categorical.entropy_of(first), -1)
    return self.draw(params, jax.random.PRNGKey(ENTROPY_ESTIMATE_KEY), cond_rows)[2]

  def intra_patch_steps(self, entropy, intra_patch: IntraPatchRule):
    """T_steps(p) = min(L, max(⌈α·Ĥ(p)⌉, T_min)): entropy [rows] -> int32 [rows].
    (α = ∞ with Ĥ = 0 gives T_min, not ∞·0.)"""
    scaled = jnp.where(entropy > 0, intra_patch.alpha * entropy, 0.0)
    return rules.planned_steps(1.0, scaled, intra_patch.min_steps, self.max_patch_len)

  def _greedy_diffusion(self, params, cond):
    """The greedy patch of the first (all-masked) pass, each position's most
    likely symbol, scored over its bytes and, when shorter than L, its end."""
    lp = self.first_pass(params, cond)
    z = jnp.argmax(lp, -1).astype(jnp.int32)
    lengths = diffusion_lengths(z)
    counted = jnp.arange(self.max_patch_len)[None, :] <= lengths[:, None]
    total = jnp.sum(jnp.where(counted, jnp.max(lp, -1), 0.0), -1)
    out = jnp.where(jnp.arange(self.max_patch_len)[None, :] < lengths[:, None], z, vocab.PAD)
    return (out.astype(jnp.int32), lengths.astype(jnp.int32),
            total / jnp.sum(counted, -1).astype(jnp.float32))

  def check_pass(self, params, cond_rows, z):
    """cond [rows, D_dec], a full guess z [rows, L] (no MASK) -> log p(y_j = · | z_<j), then
    K = model.dec_lookahead blocks log p(y_j = · | z_<j−d), d = 1..K: [rows, (1+K)·L,
    DEC_VOCAB], the left-to-right chain at every j in one two-stream pass (`speculative`)."""
    if not self.net.dec_two_stream:
      raise ConfigError('sample.intra_patch.speculative: checks drafts with a two-stream '
                        'diffusion decoder (model.dec_two_stream = True)')
    rank = jnp.broadcast_to(jnp.arange(self.max_patch_len, dtype=jnp.int32), z.shape)
    query_rank = lookahead_ranks(rank, self.net.dec_lookahead)
    return self._decoder(params, lambda dec, *a: dec.ordered(*a), cond_rows, z, rank, query_rank)

  def _draw_diffusion(self, params, key, cond, top_p, rows, intra_patch, valid=None):
    """(bytes [k, L], lengths [k], Ĥ [k], passes run per row [k] (0 where not valid [k]),
    rows run over all passes []: k for the first pass, then the running rows' buffers).

    Row r plans T_steps(p) passes, drawn by `reveal` (a random order) or, with
    intra_patch.speculative, by `speculative` (left to right, exact when
    uncapped); either stops a row once its patch is decided."""
    k, L = cond.shape[0], self.max_patch_len
    order_key, step_key = jax.random.split(key)
    first = self.first_pass(params, cond)
    entropy = self.entropy_estimate(params, cond, first)
    steps = self.intra_patch_steps(entropy, intra_patch)
    if valid is not None:
      steps = jnp.where(valid, steps, 0)
    if intra_patch.speculative:
      check = lambda z, index: self.check_pass(params, cond[index], z)
      z, taken, rows_run = speculative_draw(first, check, steps, step_key, top_p, rows)
    else:
      rank = reveal_ranks(categorical.row_uniform(order_key, (k, L), rows),
                          self.net.dec_order_bias)
      denoise = lambda z, index: self.denoise_patch(params, cond[index], z, rank[index])
      z, taken, rows_run = reveal_draw(first, denoise, steps, rank, step_key, top_p, rows)
    lengths = diffusion_lengths(z)
    out = jnp.where(jnp.arange(L)[None, :] < lengths[:, None], z, vocab.PAD)
    return out.astype(jnp.int32), lengths.astype(jnp.int32), entropy, taken, k + rows_run


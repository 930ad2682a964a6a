"""What training optimizes and how it estimates it, beside the plain bound
(bltdiff/latent/diffusion.py): two choices of the model config, both in
training only; evaluation, and the 'bpb' metric in training, stay the bound
with t drawn as always. The scaling issue's variance question.

model.slot_weighting: how the masked slots weigh.
  'byte' (the default) trains on the bound: a masked slot weighs by its NLL
  summed over its symbols, so long patches dominate the gradient.
  'slot' trains on a reweighted objective in which every masked slot weighs the
  same, its NLL per symbol times the batch's mean symbols per real slot:

      w(t) Σ_{masked i} −log p(patch_i | z_t) · s̄ / s_i,   s_i = len_i + 1 (bytes + end).

  It equals the bound when every patch has the same length, and is not a
  bound otherwise.

model.masking: how the masked set is drawn.
  'independent' (the default): t, then each real slot masked with
  probability 1 − α(t), weight w(t).
  'count': the same bound with t integrated out. Term 1 of a row with F real
  slots does not depend on the schedule, so take α = 1 − t, w = 1/t: given t
  the count k = |S| is Binomial(F, t) and S is uniform among k-subsets, and
  C(F, k) ∫ t^(k−1) (1 − t)^(F−k) dt = 1/k, so

      E_t E_S[w(t) Σ_{i∈S} ℓ_i(S)] = Σ_{k=1..F} (1/k) E_{|S|=k}[Σ_{i∈S} ℓ_i(S)]
                                   = E_{k ~ U{1..F}} E_{|S|=k}[(F/k) Σ_{i∈S} ℓ_i(S)],

  ℓ_i(S) = −log p(patch_i | the slots outside S). Drawing k (stratified over
  the batch rows, as the antithetic t) and then S estimates the same bound,
  unbiased, with no t cut. For one row its variance is at most that of the t
  draw with t_min = 0: given S, the t draw's mean is ((F+1)/k) Σ_{i∈S} ℓ_i(S)
  with k uniform on 0..F (Rao–Blackwell), whose second moment is (F+1)/F times
  this estimator's, at the same mean.

model.visible_weight (default 0.0, off): adds to the training loss that weight
times the local decoder's NLL per symbol of the *visible* patches given their
own slot's condition h_i, an autoencoding term:

      λ · Σ_{visible i} −log p(patch_i | h_i) / Σ_{visible i} s_i.

Its log-probs come with the bound's (the decoder already runs on every slot),
so it costs no extra FLOPs. Why: bench/bound_by_t.py finds the trained
latent model hardly uses context (a masked patch costs nearly the same with
every other patch visible as with none), and the local encoder learns only
through that context pathway; this gives the encoder and the latent a direct
signal to carry each patch's content.
"""

import jax
import jax.numpy as jnp

SLOT_WEIGHTINGS = ('byte', 'slot')
MASKINGS = ('independent', 'count')


def weighting_of(model_config) -> str:
  """model.slot_weighting; 'byte' for configs written before it existed."""
  return model_config.get('slot_weighting', 'byte')


def masking_of(model_config) -> str:
  """model.masking; 'independent' for configs written before it existed."""
  return model_config.get('masking', 'independent')


def visible_weight_of(model_config) -> float:
  """model.visible_weight; 0.0 for configs written before it existed."""
  return float(model_config.get('visible_weight', 0.0))


def visible_reconstruction(log_probs, lengths, visible):
  """log p(patch_i | h_i) [b, P] -> −(its sum over visible slots) per visible
  symbol (bytes + end), nats: a scalar."""
  symbols = jnp.where(visible, (lengths + 1).astype(jnp.float32), 0.0)
  return jnp.sum(jnp.where(visible, -log_probs, 0.0)) / jnp.maximum(jnp.sum(symbols), 1.0)


def per_slot(nll, lengths, slot_mask):
  """nll [b, P] (0 where not masked) -> nll · s̄ / s_i [b, P], s̄ over the real
  slots of the batch."""
  symbols = (lengths + 1).astype(jnp.float32)
  mean_symbols = (jnp.sum(jnp.where(slot_mask, symbols, 0.0))
                  / jnp.maximum(jnp.sum(slot_mask), 1))
  return nll * mean_symbols / symbols


def count_masked(key, slot_mask):
  """The 'count' draw: (masked bool [b, P], weight F/k [b]); k ~ U{1..F} per row
  (one uniform offset spread evenly over the rows), k of the row's F real slots
  masked uniformly at random. A row with no real slot masks nothing, weight 0."""
  b, p = slot_mask.shape
  filled = jnp.sum(slot_mask, axis=-1)  # F [b]
  offset_key, order_key = jax.random.split(key)
  u = jnp.mod(jax.random.uniform(offset_key, ()) + jnp.arange(b, dtype=jnp.float32) / b, 1.0)
  k = jnp.clip(1 + jnp.floor(u * filled).astype(jnp.int32), 1, jnp.maximum(filled, 1))
  scores = jnp.where(slot_mask, jax.random.uniform(order_key, (b, p)), 2.0)  # real slots first
  rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  masked = (rank < k[:, None]) & slot_mask
  return masked, jnp.where(filled > 0, filled / k, 0.0).astype(jnp.float32)

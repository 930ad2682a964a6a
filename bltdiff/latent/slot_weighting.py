"""How training weighs the masked slots (model.slot_weighting; the scaling
issue's variance question).

'byte' (the default) trains on the bound itself (bltdiff/latent/diffusion.py):
a masked slot weighs by its NLL summed over its symbols, so long patches
dominate the gradient. 'slot' trains on a reweighted objective in which every
masked slot weighs the same, its NLL per symbol times the batch's mean symbols
per real slot:

    w(t) Σ_{masked i} −log p(patch_i | z_t) · s̄ / s_i,   s_i = len_i + 1 (bytes + end).

It equals the bound when every patch has the same length, and is not a bound
otherwise: evaluation, and the 'bpb' metric in training, stay the bound.
"""

import jax.numpy as jnp

SLOT_WEIGHTINGS = ('byte', 'slot')


def of(model_config) -> str:
  """model.slot_weighting; 'byte' for configs written before it existed."""
  return model_config.get('slot_weighting', 'byte')


def per_slot(nll, lengths, slot_mask):
  """nll [b, P] (0 where not masked) -> nll · s̄ / s_i [b, P], s̄ over the real
  slots of the batch."""
  symbols = (lengths + 1).astype(jnp.float32)
  mean_symbols = (jnp.sum(jnp.where(slot_mask, symbols, 0.0))
                  / jnp.maximum(jnp.sum(slot_mask), 1))
  return nll * mean_symbols / symbols

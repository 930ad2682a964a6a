"""The transformer building blocks (bltdiff/layers.py) beyond what the models' tests cover."""

import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import flops, layers


def test_only_last_is_the_full_stack_read_at_its_last_tokens():
  """Transformer(only_last=n): the same parameters, the same outputs for the
  last n tokens as the full stack (they attend to every token below), and
  fewer FLOPs, since the last block computes nothing for the others."""
  model = layers.Transformer(num_layers=2, num_heads=2, mlp_dim=48)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 10, 16))
  positions = jnp.broadcast_to(jnp.arange(10), (3, 10))
  mask = jax.random.bernoulli(jax.random.PRNGKey(1), 0.6, (3, 1, 10, 10)) | jnp.eye(10, dtype=bool)
  params = model.init(jax.random.PRNGKey(2), x, mask, positions)
  assert (jax.tree.structure(params)
          == jax.tree.structure(model.init(jax.random.PRNGKey(2), x, mask, positions,
                                           only_last=4)))
  full = model.apply(params, x, mask, positions)
  last = model.apply(params, x, mask, positions, only_last=4)
  assert last.shape == (3, 4, 16)
  np.testing.assert_allclose(last, full[:, -4:], atol=1e-5)
  cost = lambda n: flops.count(lambda p: model.apply(p, x, mask, positions, only_last=n), params)
  assert cost(4) < 0.8 * cost(0)

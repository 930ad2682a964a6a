"""The train state, its shardings, and what train, eval and sample share: `setup`.

Checkpoint format (orbax, item 'state' of bltdiff.training.checkpointing): the
TrainState below, field by field. `ema_params` is None when train.ema_rate is
0, so the saved tree differs between runs with and without an EMA; checkpoints
written before the EMA existed (no `ema_params` field) do not restore.
"""

from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bltdiff import config_checks, sharding
from bltdiff.data import pair_batches
from bltdiff.models import registry
from bltdiff.training import ema, optimizer


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []
  params: Any
  ema_params: Any  # the EMA of params (bltdiff.training.ema); None when train.ema_rate is 0
  opt_state: Any
  rng: jax.Array  # uint32 [2], the key the next step splits


def example_batch(config, batch_size: int = 1) -> dict:
  """Zeros shaped like a data batch: what `model.init` traces."""
  batch = {'tokens': np.zeros((batch_size, config.data.seq_len), np.int32)}
  if config.data.use_entropies:
    batch['entropies'] = np.zeros((batch_size, config.data.seq_len), np.float32)
  if pair_batches.is_pairs(config.data):  # the fields of bltdiff.data.pair_batches
    batch.update(target_mask=np.zeros((batch_size, config.data.seq_len), bool),
                 source_len=np.zeros((batch_size,), np.int32),
                 valid=np.ones((batch_size,), bool))
  return batch


def abstract_params(model, config):
  """Parameter shapes (with logical-partitioning boxes), traced, not allocated."""
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), example_batch(config))


def state_shardings(model, tx, config, mesh):
  """(abstract TrainState with shardings, TrainState of NamedShardings)."""
  boxed = abstract_params(model, config)
  param_sh = sharding.logical_shardings(boxed, mesh)
  params = nn.unbox(boxed)
  opt_abstract = jax.eval_shape(tx.init, params)
  # Optimizer moments are laid out like the parameters they track.
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, opt_abstract, param_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh))
  with_ema = config.train.ema_rate > 0  # the EMA is laid out like the parameters
  shardings = TrainState(step=sharding.replicated(mesh), params=param_sh,
                         ema_params=param_sh if with_ema else None, opt_state=opt_sh,
                         rng=sharding.replicated(mesh))
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                        ema_params=params if with_ema else None, opt_state=opt_abstract,
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def create_train_state(model, tx, config, mesh, shardings, params=None):
  """Initializes parameters directly into their shardings (never whole on one
  device), or starts from the given `params` (shaped like the model's: a
  distillation student from its teacher) with a fresh optimizer state."""

  def init(key, given):
    init_key, rng = jax.random.split(key)
    params = nn.unbox(model.init(init_key, example_batch(config))) if given is None else given
    return TrainState(step=jnp.array(0, jnp.int32), params=params,
                      ema_params=ema.init(params, config.train.ema_rate),
                      opt_state=tx.init(params), rng=rng)

  with sharding.activate(mesh):
    return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(config.seed), params)


class RunSetup(NamedTuple):
  mesh: Any
  model: Any
  tx: Any
  lr_schedule: Any
  abstract_state: TrainState  # shapes and shardings of the train state
  shardings: TrainState


def setup(config) -> RunSetup:
  """Mesh, model, optimizer and state shardings of a run. Validates the config
  against the mesh (the batch must split over the data-parallel devices)."""
  mesh = sharding.make_mesh(config.mesh)
  config_checks.validate(config, num_batch_shards=mesh.shape['data'] * mesh.shape['fsdp'])
  model = registry.get_model(config)
  tx, lr = optimizer.make_optimizer(config.train)
  abstract, shardings = state_shardings(model, tx, config, mesh)
  return RunSetup(mesh, model, tx, lr, abstract, shardings)

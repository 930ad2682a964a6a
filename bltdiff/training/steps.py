"""loss_fn / train_step / eval_step, jitted under the run's mesh (MaxText style).

A run trains the model's own loss, or an `Objective`: another loss of the same
parameters that also reads a frozen pytree laid out like them (a teacher's
parameters in distillation, bltdiff.training.distill). The frozen tree is an
argument of the compiled step, not a constant baked into it.
"""

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import optax
from clu import metrics as clu_metrics

from bltdiff import sharding
from bltdiff.training import ema
from bltdiff.training.state import TrainState, abstract_params, example_batch


class Objective(NamedTuple):
  """loss(params, frozen, batch, key, train) -> (scalar loss, metrics dict),
  and `frozen`, a pytree shaped and sharded like the parameters."""
  loss: Callable
  frozen: Any


def loss_fn(model, params, batch, key, train: bool, objective: Objective | None = None,
            frozen=None):
  """(scalar loss, metrics dict): the model's loss, or the objective's with
  `frozen` (the objective's tree, as passed to the step); one place for the
  step fns."""
  if objective is None:
    return model.loss(params, batch, key, train=train)
  return objective.loss(params, frozen, batch, key, train)


def train_metric_names(model, config, objective: Objective | None = None) -> tuple[str, ...]:
  """Names of the scalars a train step reports (the loss's metrics, traced)."""
  metrics = jax.eval_shape(
      lambda p: loss_fn(model, p, example_batch(config), jax.random.PRNGKey(0), True,
                        objective, p)[1],
      nn.unbox(abstract_params(model, config)))
  return tuple(sorted(metrics)) + ('grad_norm', 'learning_rate')


def make_train_step(model, tx, lr_schedule, mesh, shardings, metric_names,
                    ema_rate: float = 0.0, objective: Objective | None = None):
  """jit((state, batch) -> (state, clu metrics)); the old state is donated.
  With an objective: jit((state, batch, frozen) -> ...), frozen sharded like
  the parameters. ema_rate: train.ema_rate, which the state was created with
  (it holds an EMA exactly when the rate is positive)."""
  collection = clu_metrics.Collection.create(
      **{n: clu_metrics.Average.from_output(n) for n in metric_names})

  def train_step(state: TrainState, batch, frozen=None):
    rng, key = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(
        lambda p: loss_fn(model, p, batch, key, True, objective, frozen), has_aux=True)
    (_, metrics), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if (state.ema_params is None) != (ema_rate == 0):
      raise ValueError(f'train step: ema_rate={ema_rate} but the train state '
                       f'{"has no" if state.ema_params is None else "has an"} EMA')
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   learning_rate=lr_schedule(state.step))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                              ema_params=ema.update(state.ema_params, params, ema_rate))
    return new_state, collection.single_from_model_output(**metrics)

  in_shardings = (shardings, sharding.batch_sharding(mesh))
  if objective is not None:
    in_shardings += (shardings.params,)
  return jax.jit(train_step, in_shardings=in_shardings,
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def make_eval_step(model, mesh, param_shardings):
  """jit((params, batch, key) -> metrics) of the model's loss without dropout."""

  def eval_step(params, batch, key):
    return loss_fn(model, params, batch, key, False)[1]

  return jax.jit(eval_step, in_shardings=(param_shardings, sharding.batch_sharding(mesh),
                                          sharding.replicated(mesh)))


def make_objective_eval_step(model, mesh, param_shardings, objective: Objective):
  """jit((params, batch, key, frozen) -> metrics) of the objective without dropout."""

  def eval_step(params, batch, key, frozen):
    return loss_fn(model, params, batch, key, False, objective, frozen)[1]

  return jax.jit(eval_step, in_shardings=(param_shardings, sharding.batch_sharding(mesh),
                                          sharding.replicated(mesh), param_shardings))

"""loss_fn / train_step / eval_step, jitted under the run's mesh (MaxText style)."""

import flax.linen as nn
import jax
import optax
from clu import metrics as clu_metrics

from bltdiff import sharding
from bltdiff.training import ema
from bltdiff.training.state import TrainState, abstract_params, example_batch


def loss_fn(model, params, batch, key, train: bool):
  """(scalar loss, metrics dict): the model's loss, one place for the step fns."""
  return model.loss(params, batch, key, train=train)


def train_metric_names(model, config) -> tuple[str, ...]:
  """Names of the scalars a train step reports (the model's metrics, traced)."""
  metrics = jax.eval_shape(
      lambda p: loss_fn(model, p, example_batch(config), jax.random.PRNGKey(0), True)[1],
      nn.unbox(abstract_params(model, config)))
  return tuple(sorted(metrics)) + ('grad_norm', 'learning_rate')


def make_train_step(model, tx, lr_schedule, mesh, shardings, metric_names,
                    ema_rate: float = 0.0):
  """jit((state, batch) -> (state, clu metrics)); the old state is donated.
  ema_rate: train.ema_rate, which the state was created with (it holds an EMA
  exactly when the rate is positive)."""
  collection = clu_metrics.Collection.create(
      **{n: clu_metrics.Average.from_output(n) for n in metric_names})

  def train_step(state: TrainState, batch):
    rng, key = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(lambda p: loss_fn(model, p, batch, key, True), has_aux=True)
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

  batch_sh = sharding.batch_sharding(mesh)
  return jax.jit(train_step, in_shardings=(shardings, batch_sh),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def make_eval_step(model, mesh, param_shardings):
  """jit((params, batch, key) -> metrics) of the loss without dropout."""

  def eval_step(params, batch, key):
    return loss_fn(model, params, batch, key, False)[1]

  return jax.jit(eval_step, in_shardings=(param_shardings, sharding.batch_sharding(mesh),
                                          sharding.replicated(mesh)))

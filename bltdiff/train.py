"""The training loop: config in, checkpoints, metrics and samples out.

One jitted train step under a device mesh (one device is a 1x1x1 mesh), optax
AdamW with warmup + cosine decay and clipping, clu metric writers and progress
reports, periodic evaluation (bits per byte) and samples, and orbax checkpoints
holding the train state together with the data iterator, so a resumed run is
bit-identical to an uninterrupted one.
"""

import functools
import math
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from clu import metric_writers, metrics as clu_metrics, periodic_actions

from bltdiff import checkpointing, config_checks, models, sharding, text
from bltdiff.data import pipeline
from bltdiff.errors import DataError


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32 [2], the key the next step splits


def make_optimizer(train_config):
  """AdamW with linear warmup, cosine decay and global-norm clipping; weight
  decay only on matrices (not norms' scales). Returns (tx, learning-rate schedule)."""
  lr = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_config.learning_rate,
      warmup_steps=train_config.warmup_steps,
      decay_steps=max(train_config.num_steps, train_config.warmup_steps + 1),
      end_value=train_config.learning_rate * train_config.get('final_lr_fraction', 0.1))
  tx = optax.chain(
      optax.clip_by_global_norm(train_config.grad_clip),
      optax.adamw(lr, b1=train_config.get('b1', 0.9), b2=train_config.get('b2', 0.99),
                  weight_decay=train_config.weight_decay,
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))
  if train_config.get('grad_accum_steps', 1) > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=train_config.grad_accum_steps)
  return tx, lr


def example_batch(config, batch_size: int = 1) -> dict:
  """Zeros shaped like a data batch: what `model.init` traces."""
  batch = {'tokens': np.zeros((batch_size, config.data.seq_len), np.int32)}
  if config.data.get('use_entropies', False):
    batch['entropies'] = np.zeros((batch_size, config.data.seq_len), np.float32)
  return batch


def state_shardings(model, tx, config, mesh):
  """(abstract TrainState with shardings, TrainState of NamedShardings)."""
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), example_batch(config))
  param_sh = sharding.logical_shardings(boxed, mesh)
  params = nn.unbox(boxed)
  opt_abstract = jax.eval_shape(tx.init, params)
  # Optimizer moments are laid out like the parameters they track.
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, opt_abstract, param_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh))
  shardings = TrainState(step=sharding.replicated(mesh), params=param_sh, opt_state=opt_sh,
                         rng=sharding.replicated(mesh))
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                        opt_state=opt_abstract, rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def create_train_state(model, tx, config, mesh, shardings):
  """Initializes parameters directly into their shardings (never whole on one device)."""

  def init(key):
    init_key, rng = jax.random.split(key)
    params = nn.unbox(model.init(init_key, example_batch(config)))
    return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                      rng=rng)

  with sharding.activate(mesh):
    return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(config.seed))


def make_metrics_collection(names):
  return clu_metrics.Collection.create(**{n: clu_metrics.Average.from_output(n) for n in names})


def make_train_step(model, tx, lr_schedule, mesh, shardings, metric_names):
  collection = make_metrics_collection(metric_names)

  def train_step(state: TrainState, batch):
    rng, key = jax.random.split(state.rng)
    loss_fn = lambda params: model.loss(params, batch, key, train=True)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                   learning_rate=lr_schedule(state.step))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
    return new_state, collection.single_from_model_output(**metrics)

  batch_sh = sharding.batch_sharding(mesh)
  return jax.jit(train_step, in_shardings=(shardings, batch_sh),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def train_metric_names(model, config):
  metrics = jax.eval_shape(
      lambda p: model.loss(p, example_batch(config), jax.random.PRNGKey(0), train=True)[1],
      nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), example_batch(config))))
  return tuple(sorted(metrics)) + ('grad_norm', 'learning_rate')


def make_eval_step(model, mesh, param_shardings):

  def eval_step(params, batch, key):
    return model.loss(params, batch, key, train=False)[1]

  return jax.jit(eval_step, in_shardings=(param_shardings, sharding.batch_sharding(mesh),
                                          sharding.replicated(mesh)))


def evaluate(model, params, config, prepared_dir, mesh, eval_step, seed: int = 0) -> dict:
  """Validation metrics averaged over train.eval_batches batches and, for
  diffusion models, train.eval_t_samples draws of t per batch (the bound is a
  Monte Carlo estimate; more draws make it stable)."""
  per_process = config.train.batch_size // jax.process_count()
  iterator = pipeline.make_iterator(
      config.data, prepared_dir, 'validation', batch_size=per_process, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(), num_epochs=1)
  t_samples = config.train.get('eval_t_samples', 1) if getattr(model, 'stochastic_loss', True) else 1
  totals, count = {}, 0
  key = jax.random.PRNGKey(seed)
  for i, local_batch in zip(range(config.train.eval_batches), iterator):
    batch = sharding.global_batch(local_batch, mesh)
    for r in range(t_samples):
      metrics = eval_step(params, batch, jax.random.fold_in(key, i * t_samples + r))
      for k, v in metrics.items():
        totals[k] = totals.get(k, 0.0) + v
      count += 1
  if count == 0:
    raise DataError(f'validation split of {prepared_dir} has no full batch of '
                    f'{per_process} x {config.data.seq_len} bytes; lower train.batch_size or '
                    f'data.seq_len, or raise data.validation_fraction')
  return {f'eval_{k}': float(v) / count for k, v in totals.items()}


def write_samples(model, params, config, workdir: str, step: int, key) -> str:
  """Draws config.sample.num_samples samples; writes raw tokens (.npy) and a
  readable rendering (.txt) under workdir/samples. Returns the .txt path."""
  s = config.sample
  start = time.time()
  tokens, stats = model.sample(params, key, num_samples=s.num_samples, length=config.data.seq_len,
                               steps=s.steps, sampler=s.sampler, top_p=s.top_p)
  wall = time.time() - start
  out_dir = os.path.join(workdir, 'samples')
  path = os.path.join(out_dir, f'step_{step:07d}.txt')
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    np.save(path[:-4] + '.npy', tokens.astype(np.int16))
    header = (f'# step {step}: {s.num_samples} samples, {stats["steps"]} steps, '
              f'{stats["latent_calls"]} network calls ({s.sampler}), {wall:.1f}s (incl. compilation)\n')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(header + text.render_samples(tokens))
  return path


def cost_flops(compiled) -> float:
  """FLOPs of one call of a compiled function, from XLA's cost analysis."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


def prepare_run_data(config, workdir: str):
  """(config, prepared_dir): the shards a run reads. A model class may define
  `prepare_data(config, workdir) -> (config, prepared_dir)` to build its own
  inputs first (latent MDLM: entropy model, threshold calibration, shards with
  entropies) and return the config with what it resolved (e.g. the threshold)."""
  cls = models.model_class(config.model.kind)
  if hasattr(cls, 'prepare_data'):
    return cls.prepare_data(config, workdir)
  return config, pipeline.ensure_prepared(config.data, workdir)


def setup(config, workdir: str):
  """What train, eval and sample share: mesh, model, optimizer, shardings."""
  mesh = sharding.make_mesh(config.mesh)
  batch_shards = mesh.shape['data'] * mesh.shape['fsdp']
  config_checks.validate(config, num_batch_shards=batch_shards)
  model = models.get_model(config)
  tx, lr = make_optimizer(config.train)
  abstract, shardings = state_shardings(model, tx, config, mesh)
  return mesh, model, tx, lr, abstract, shardings


def restore_state_for_inference(config, workdir: str, step=None):
  """(state, model, step) of the latest checkpoint in workdir; state is None if none."""
  mesh, model, _, _, abstract, _ = setup(config, workdir)
  manager = checkpointing.make_manager(workdir)
  state, step = checkpointing.restore(manager, abstract, step=step)
  return state, model, step


def train_and_evaluate(config, workdir: str):
  """Trains config.model on config.data in workdir, resuming from its latest checkpoint."""
  models.model_class(config.model.kind)  # an unknown kind fails before any data work
  config, prepared_dir = prepare_run_data(config, workdir)
  mesh, model, tx, lr, abstract, shardings = setup(config, workdir)
  checkpointing.save_config(config, workdir)
  per_process = config.train.batch_size // jax.process_count()
  train_iter = pipeline.make_iterator(
      config.data, prepared_dir, 'train', batch_size=per_process, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())

  manager = checkpointing.make_manager(workdir, keep=config.train.keep_checkpoints)
  state, start_step = checkpointing.restore(manager, abstract, train_iter)
  if state is None:
    state = create_train_state(model, tx, config, mesh, shardings)
  else:
    logging.info('resumed from step %d', start_step)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})
  num_steps = config.train.num_steps
  report_progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                                    every_secs=None, every_steps=config.train.log_every)
  with sharding.activate(mesh):
    step_fn = make_train_step(model, tx, lr, mesh, shardings, train_metric_names(model, config))
    eval_step = make_eval_step(model, mesh, shardings.params)
    compiled, flops_per_step = None, 0.0
    train_metrics, last_log = None, (time.time(), start_step)
    sample_key = jax.random.PRNGKey(config.seed + 1)
    for step in range(start_step + 1, num_steps + 1):
      batch = sharding.global_batch(next(train_iter), mesh)
      if compiled is None:
        compiled = step_fn.lower(state, batch).compile()
        flops_per_step = cost_flops(compiled)
      state, metrics = compiled(state, batch)
      train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
      report_progress(step)

      if step % config.train.log_every == 0 or step == num_steps:
        summary = {f'train_{k}': float(v) for k, v in train_metrics.compute().items()}
        elapsed = time.time() - last_log[0]
        steps_done = step - last_log[1]
        summary['bytes_per_s'] = steps_done * config.train.batch_size * config.data.seq_len / elapsed
        if flops_per_step and config.train.get('peak_flops_per_device', 0):
          achieved = steps_done * flops_per_step / elapsed
          summary['mfu'] = achieved / (config.train.peak_flops_per_device * jax.device_count())
        writer.write_scalars(step, summary)
        train_metrics, last_log = None, (time.time(), step)

      if step % config.train.eval_every == 0 or step == num_steps:
        with report_progress.timed('eval'):
          writer.write_scalars(step, evaluate(model, state.params, config, prepared_dir, mesh,
                                              eval_step))
      if step % config.train.sample_every == 0 or step == num_steps:
        with report_progress.timed('sample'):
          path = write_samples(model, state.params, config, workdir, step,
                               jax.random.fold_in(sample_key, step))
          logging.info('samples written to %s', path)
      if step % config.train.checkpoint_every == 0 or step == num_steps:
        checkpointing.save(manager, step, state, train_iter)
  manager.wait_until_finished()
  writer.flush()
  return state


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    elif isinstance(v, (int, float, str, bool)):
      out[f'{prefix}{k}'] = v
  return out

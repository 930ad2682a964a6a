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
from clu import metrics as clu_metrics

from bltdiff import checkpointing, config_checks, metric_logging, models, samplers, sharding, text
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
  accum = train_config.get('grad_accum_steps', 1)
  if accum > 1:
    # Gradient accumulation: each train step is a micro-step on train.batch_size
    # sequences; every accum-th step applies the mean gradient (effective batch
    # accum x batch_size). Step counts in the config (num_steps, warmup_steps)
    # stay in micro-steps, so the inner optimizer, which counts updates, reads
    # the schedule at micro-step update * accum.
    inner = optax.chain(
        optax.clip_by_global_norm(train_config.grad_clip),
        optax.adamw(lambda count: lr(count * accum), b1=train_config.get('b1', 0.9),
                    b2=train_config.get('b2', 0.99), weight_decay=train_config.weight_decay,
                    mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))
    tx = optax.MultiSteps(inner, every_k_schedule=accum)
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
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
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
  local_batches = zip(range(config.train.eval_batches), iterator)
  if jax.process_count() > 1:
    # Processes hold different documents and may have different numbers of full
    # batches; every eval step is a collective, so all run the smallest count.
    from jax.experimental import multihost_utils
    local_batches = list(local_batches)
    agreed = int(np.min(multihost_utils.process_allgather(np.int32(len(local_batches)))))
    local_batches = local_batches[:agreed]
  for i, local_batch in local_batches:
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
  readable rendering (.txt) under workdir/samples. Returns the .txt path.

  Every process must call it (the sampler is one SPMD program); only process 0
  writes files."""
  s = config.sample
  start = time.time()
  if jax.process_count() > 1:
    # Parameters sharded across hosts are not readable by one host, and the
    # samplers return host numpy arrays: sample from a replicated copy (every
    # process computes the same samples from the same key).
    params = _replicate(params)
  tokens, stats = model.sample(params, key, num_samples=s.num_samples, length=config.data.seq_len,
                               steps=s.steps, sampler=s.sampler, top_p=s.top_p,
                               **samplers.sampler_options(s))
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


def _replicate(tree):
  leaves = jax.tree.leaves(tree)
  if not leaves or not hasattr(leaves[0], 'sharding'):
    return tree
  mesh = leaves[0].sharding.mesh
  return jax.jit(lambda t: t, out_shardings=sharding.replicated(mesh))(tree)


def cost_flops(compiled) -> float:
  """FLOPs of one call of a compiled function, from XLA's cost analysis.

  For a function partitioned over several devices this is the program one
  device runs (XLA analyses the per-device module), i.e. FLOPs per device."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # some backends do not implement it  # pylint: disable=broad-except
    return 0.0
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


# Dense bf16 peak FLOP/s per JAX device (no sparsity), by `device_kind`, from the
# vendors' data sheets. A TPU v2/v3 JAX device is one core (half a chip); v4 and
# later present one device per chip (megacore). Matching is by substring, longest
# key first, case-insensitive.
PEAK_FLOPS_BF16 = {
    'TPU v2': 22.5e12,
    'TPU v3': 61.5e12,
    'TPU v4': 275e12,
    'TPU v4 lite': 137.5e12,  # v4i
    'TPU v5 lite': 197e12,    # v5e
    'TPU v5e': 197e12,
    'TPU v5p': 459e12,
    'TPU v5': 459e12,         # v5p reports 'TPU v5'
    'TPU v6 lite': 918e12,    # Trillium (v6e)
    'TPU v6e': 918e12,
    'TPU7x': 2307e12,         # Ironwood, per chip
    'H100': 989e12,           # SXM; PCIe parts are lower
    'H100 PCIe': 756e12,
    'H200': 989e12,
    'GH200': 989e12,
    'H20': 148e12,
    'B200': 2250e12,
    'GB200': 2500e12,
    'A100': 312e12,
    'A10G': 70e12,  # 'NVIDIA A10G' (AWS); tensor-core dense bf16 ~ 70 TFLOP/s
    'L4': 121e12,
    'L40S': 362e12,
    'V100': 125e12,  # fp16 tensor cores (no bf16)
}


def peak_flops_per_device(config_value: float = 0.0, device_kind: str | None = None) -> float:
  """Peak FLOP/s of one device for MFU: the config value if positive, else the
  table entry for `device_kind` (default: that of jax.devices()[0]), else 0
  (unknown, e.g. CPU: MFU is then not logged)."""
  if config_value and config_value > 0:
    return float(config_value)
  kind = (device_kind if device_kind is not None else jax.devices()[0].device_kind).lower()
  for key in sorted(PEAK_FLOPS_BF16, key=len, reverse=True):
    if key.lower() in kind:
      return PEAK_FLOPS_BF16[key]
  return 0.0


def mfu(flops_per_device_step: float, steps: int, seconds: float, peak: float) -> float:
  """Model FLOPs utilization: achieved / peak, both per device. flops_per_device_step
  is `cost_flops` of the compiled step (XLA counts what is executed, so remat or
  recomputation counts too: strictly, hardware FLOPs utilization)."""
  if not (flops_per_device_step and peak and seconds > 0):
    return 0.0
  return steps * flops_per_device_step / seconds / peak


def prepare_run_data(config, workdir: str):
  """(config, prepared_dir): the shards a run reads. A model class may define
  `prepare_data(config, workdir) -> (config, prepared_dir)` to build its own
  inputs first (latent MDLM: entropy model, threshold calibration, shards with
  entropies) and return the config with what it resolved (e.g. the threshold)."""
  cls = models.model_class(config.model.kind)
  if hasattr(cls, 'prepare_data'):
    # Called on every process: a chain that trains or runs models (the latent
    # MDLM's entropy model) needs all processes for its collectives. Multi-host
    # runs should prepare beforehand in one process (launch/), so that here
    # every step finds its output in place.
    return cls.prepare_data(config, workdir)
  if jax.process_count() == 1 or config.data.get('prepared_dir', ''):
    return config, pipeline.ensure_prepared(config.data, workdir)
  # Several processes share one workdir: process 0 writes the shards, the others
  # wait, then find them in place (preparation skips what exists).
  from jax.experimental import multihost_utils
  if jax.process_index() == 0:
    prepared = pipeline.ensure_prepared(config.data, workdir)
  multihost_utils.sync_global_devices('bltdiff:prepare_run_data')
  if jax.process_index() != 0:
    prepared = pipeline.ensure_prepared(config.data, workdir)
  return config, prepared


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


def train_and_evaluate(config, workdir: str, stop_at_step: int | None = None):
  """Trains config.model on config.data in workdir, resuming from its latest checkpoint.

  stop_at_step: end this process after that step (with a checkpoint), as a
  preempted or time-boxed job would; the schedule still spans train.num_steps."""
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

  # Only process 0 writes metrics (TensorBoard and workdir/metrics.jsonl); the
  # others log to their own logs.
  writer = metric_logging.make_writer(workdir, is_main_process=jax.process_index() == 0)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})
  num_steps = config.train.num_steps
  report_progress = metric_logging.make_progress(num_steps, writer, config.train.log_every)
  with sharding.activate(mesh):
    step_fn = make_train_step(model, tx, lr, mesh, shardings, train_metric_names(model, config))
    eval_step = make_eval_step(model, mesh, shardings.params)
    compiled, flops_per_step = None, 0.0
    peak = peak_flops_per_device(config.train.get('peak_flops_per_device', 0.0))
    train_metrics, last_log = None, (time.time(), start_step)
    sample_key = jax.random.PRNGKey(config.seed + 1)
    last_step = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
    for step in range(start_step + 1, last_step + 1):
      batch = sharding.global_batch(next(train_iter), mesh)
      if compiled is None:
        compiled = step_fn.lower(state, batch).compile()
        flops_per_step = cost_flops(compiled)
        logging.info('train step: %.3g FLOPs per device (XLA cost analysis); peak %.3g FLOP/s '
                     'per device (%s)%s', flops_per_step, peak, jax.devices()[0].device_kind,
                     '' if peak else ': MFU not logged (set train.peak_flops_per_device)')
      state, metrics = compiled(state, batch)
      train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
      report_progress(step)

      if step % config.train.log_every == 0 or step == num_steps:
        summary = {f'train_{k}': float(v) for k, v in train_metrics.compute().items()}
        elapsed = time.time() - last_log[0]
        steps_done = step - last_log[1]
        summary['bytes_per_s'] = steps_done * config.train.batch_size * config.data.seq_len / elapsed
        summary['bytes_per_s_per_device'] = summary['bytes_per_s'] / jax.device_count()
        if flops_per_step and peak:
          # cost_flops is per device (the partitioned program), so is the peak.
          summary['mfu'] = mfu(flops_per_step, steps_done, elapsed, peak)
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
      if step % config.train.checkpoint_every == 0 or step == last_step:
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

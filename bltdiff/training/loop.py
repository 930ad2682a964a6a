"""The training loop: a resolved run config in, checkpoints, metrics and samples out.

One jitted train step under a device mesh (one device is a 1x1x1 mesh), clu
metric writers and progress reports, periodic evaluation (bits per byte) and
samples, and orbax checkpoints holding the train state together with the data
iterator, so a resumed run is bit-identical to an uninterrupted one. The data
must already be prepared (`bltdiff.data_chain.prepare_run_data` resolves
config.data.prepared_dir); `bltdiff.commands.train` does both.
"""

import time

import jax
from absl import logging

from bltdiff import flops, sharding
from bltdiff.data import pipeline
from bltdiff.training import (checkpointing, ema, evaluation, metric_logging, mfu, preemption,
                              samples, state, steps)


def flatten(d: dict, prefix: str = '') -> dict:
  """Nested dict -> {'a.b': scalar} (hyperparameters for TensorBoard)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    elif isinstance(v, (int, float, str, bool)):
      out[f'{prefix}{k}'] = v
  return out


def train_and_evaluate(config, workdir: str, stop_at_step: int | None = None,
                       objective: steps.Objective | None = None, init_params=None):
  """Trains config.model on config.data.prepared_dir in workdir, resuming from
  its latest checkpoint. Returns the final TrainState.

  stop_at_step: end this process after that step (with a checkpoint), as a
  preempted or time-boxed job would; the schedule still spans train.num_steps.
  objective: train that loss instead of the model's own (its frozen tree is
  passed to every step; eval reports both); init_params: the parameters a
  new run starts from instead of a fresh initialization (a distillation
  student starts from its teacher)."""
  prepared_dir = config.data.prepared_dir
  checkpointing.check_resumable(config, workdir)
  run = state.setup(config)
  mesh, model = run.mesh, run.model
  per_process = config.train.batch_size // jax.process_count()
  train_iter = pipeline.make_iterator(
      config.data, prepared_dir, 'train', batch_size=per_process, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())

  manager = checkpointing.make_manager(workdir, keep=config.train.keep_checkpoints)
  train_state, start_step = checkpointing.restore(manager, run.abstract_state, train_iter,
                                                  set_aside_damaged=True)
  if train_state is None:
    train_state = state.create_train_state(model, run.tx, config, mesh, run.shardings,
                                           init_params)
  else:
    logging.info('resumed from step %d', start_step)
  # Only now, with the state it describes in hand, is the run's config written.
  checkpointing.save_config(config, workdir)

  # Only process 0 writes metrics (TensorBoard and workdir/metrics.jsonl); the
  # others log to their own logs.
  writer = metric_logging.make_writer(workdir, is_main_process=jax.process_index() == 0,
                                      resumed_at=start_step)
  if start_step == 0:
    writer.write_hparams(flatten(config.to_dict()))
  num_steps = config.train.num_steps
  report_progress = metric_logging.make_progress(num_steps, writer, config.train.log_every)
  with sharding.activate(mesh), preemption.StopRequests() as stop:
    step_fn = steps.make_train_step(model, run.tx, run.lr_schedule, mesh, run.shardings,
                                    steps.train_metric_names(model, config, objective),
                                    config.train.ema_rate, objective)
    eval_step = steps.make_eval_step(model, mesh, run.shardings.params)
    # The objective's frozen tree, laid out like the parameters, is an argument of each step.
    frozen, objective_eval = (), None
    if objective is not None:
      frozen = (jax.device_put(objective.frozen, run.shardings.params),)
      objective_eval = steps.make_objective_eval_step(model, mesh, run.shardings.params,
                                                      objective)
    evaluate_objective = lambda params: evaluation.evaluate(
        model, params, config, prepared_dir, mesh,
        lambda p, b, k: objective_eval(p, b, k, *frozen), prefix='eval_objective_')
    if objective is not None and start_step == 0:
      # Where the objective starts (a distillation student: its teacher's
      # weights), on the same validation batches and keys as later evals.
      writer.write_scalars(0, evaluate_objective(train_state.params))
    compiled, flops_per_step = None, 0.0
    peak = mfu.peak_flops_per_device(config.train.peak_flops_per_device)
    train_metrics, last_log = None, (time.time(), start_step)
    sample_key = jax.random.PRNGKey(config.seed + 1)
    last_step = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
    for step in range(start_step + 1, last_step + 1):
      batch = sharding.global_batch(next(train_iter), mesh)
      if compiled is None:
        compiled = step_fn.lower(train_state, batch, *frozen).compile()
        # The global step's FLOPs, split evenly over the devices.
        flops_per_step = flops.count(step_fn, train_state, batch, *frozen) / jax.device_count()
        logging.info('train step: %.3g FLOPs per device (bltdiff.flops); peak %.3g FLOP/s '
                     'per device (%s)%s', flops_per_step, peak, jax.devices()[0].device_kind,
                     '' if peak else ': MFU not logged (set train.peak_flops_per_device)')
      train_state, metrics = compiled(train_state, batch, *frozen)
      train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
      report_progress(step)

      if step % config.train.log_every == 0 or step == num_steps:
        summary = {f'train_{k}': float(v) for k, v in train_metrics.compute().items()}
        elapsed = time.time() - last_log[0]
        steps_done = step - last_log[1]
        summary['bytes_per_s'] = steps_done * config.train.batch_size * config.data.seq_len / elapsed
        summary['bytes_per_s_per_device'] = summary['bytes_per_s'] / jax.device_count()
        if flops_per_step and peak:
          summary['mfu'] = mfu.mfu(flops_per_step, steps_done, elapsed, peak)
        writer.write_scalars(step, summary)
        train_metrics, last_log = None, (time.time(), step)

      # Eval and samples see the EMA of the parameters when the run keeps one.
      if step % config.train.eval_every == 0 or step == num_steps:
        with report_progress.timed('eval'):
          params = ema.inference_params(train_state)
          scalars = evaluation.evaluate(model, params, config, prepared_dir, mesh, eval_step)
          if objective is not None:
            scalars.update(evaluate_objective(params))
          writer.write_scalars(step, scalars)
      if step % config.train.sample_every == 0 or step == num_steps:
        with report_progress.timed('sample'):
          path = samples.write_samples(model, ema.inference_params(train_state), config,
                                       workdir, step, jax.random.fold_in(sample_key, step))
          logging.info('samples written to %s', path)
      stopping = stop.requested(step)
      if step % config.train.checkpoint_every == 0 or step == last_step or stopping:
        checkpointing.save(manager, step, train_state, train_iter)
      if stopping and step < last_step:
        manager.wait_until_finished()
        writer.flush()
        raise preemption.Interrupted(
            f'stopped by {stop.name()} after step {step} of {num_steps}; checkpoint saved in '
            f'{checkpointing.checkpoint_dir(workdir)}; rerun the same command to resume',
            stop.signum)
  manager.wait_until_finished()
  writer.flush()
  return train_state

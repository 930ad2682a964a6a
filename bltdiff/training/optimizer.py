"""The optimizer: AdamW with linear warmup, cosine decay and global-norm clipping."""

import jax
import optax


def learning_rate_schedule(train_config):
  """Warmup to train.learning_rate over warmup_steps, cosine decay to
  final_lr_fraction of it at num_steps (counted in micro-steps)."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_config.learning_rate,
      warmup_steps=train_config.warmup_steps,
      decay_steps=max(train_config.num_steps, train_config.warmup_steps + 1),
      end_value=train_config.learning_rate * train_config.final_lr_fraction)


def _adamw(train_config, learning_rate):
  """Clipping then AdamW; weight decay only on matrices (not norms' scales)."""
  return optax.chain(
      optax.clip_by_global_norm(train_config.grad_clip),
      optax.adamw(learning_rate, b1=train_config.b1, b2=train_config.b2,
                  weight_decay=train_config.weight_decay,
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))


def make_optimizer(train_config):
  """(optax transformation, learning-rate schedule).

  Gradient accumulation (train.grad_accum_steps = k > 1): each train step is a
  micro-step on train.batch_size sequences and every k-th step applies the
  mean gradient (effective batch k x batch_size). Step counts in the config
  (num_steps, warmup_steps) stay in micro-steps, so the inner optimizer, which
  counts updates, reads the schedule at micro-step update * k."""
  lr = learning_rate_schedule(train_config)
  accum = train_config.grad_accum_steps
  if accum == 1:
    return _adamw(train_config, lr), lr
  inner = _adamw(train_config, lambda count: lr(count * accum))
  return optax.MultiSteps(inner, every_k_schedule=accum), lr

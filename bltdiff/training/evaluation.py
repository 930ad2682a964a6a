"""Validation metrics (bits per byte) of a model's parameters."""

import jax
import numpy as np

from bltdiff import sharding
from bltdiff.data import pipeline
from bltdiff.errors import DataError


def evaluate(model, params, config, prepared_dir, mesh, eval_step, seed: int = 0,
             prefix: str = 'eval_') -> dict:
  """Validation metrics averaged over train.eval_batches batches and, for
  stochastic losses (diffusion bounds), train.eval_t_samples draws of t per
  batch (the bound is a Monte Carlo estimate; more draws make it stable).
  eval_step(params, batch, key) -> metrics; they are returned as prefix + name."""
  per_process = config.train.batch_size // jax.process_count()
  iterator = pipeline.make_iterator(
      config.data, prepared_dir, 'validation', batch_size=per_process, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(), num_epochs=1)
  t_samples = config.train.eval_t_samples if model.stochastic_loss else 1
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
  return {f'{prefix}{k}': float(v) / count for k, v in totals.items()}

"""The periodic samples of a training run: workdir/samples/step_*.{txt,npy}."""

import time

import jax
import numpy as np
from etils import epath

from bltdiff import sharding, text
from bltdiff.sampling.options import SamplerOptions


def write_samples(model, params, config, workdir: str, step: int, key) -> str:
  """Draws config.sample.num_samples samples with config.sample's sampler
  options; writes raw tokens (.npy) and a readable rendering (.txt) under
  workdir/samples. Returns the .txt path.

  Every process must call it (the sampler is one SPMD program); only process 0
  writes files."""
  options = SamplerOptions.from_config(config.sample)
  num_samples = config.sample.num_samples
  start = time.time()
  if jax.process_count() > 1:
    # Parameters sharded across hosts are not readable by one host, and the
    # samplers return host numpy arrays: sample from a replicated copy (every
    # process computes the same samples from the same key).
    params = replicate(params)
  tokens, stats = model.sample(params, key, options, num_samples=num_samples,
                               length=config.data.seq_len)
  wall = time.time() - start
  out_dir = epath.Path(workdir) / 'samples'  # local or gs://
  path = out_dir / f'step_{step:07d}.txt'
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    with path.with_suffix('.npy').open('wb') as f:
      np.save(f, tokens.astype(np.int16))
    header = (f'# step {step}: {num_samples} samples, {stats["steps"]} steps, '
              f'{stats["latent_calls"]} network calls ({options.sampler}), {wall:.1f}s '
              f'(incl. compilation)\n')
    path.write_text(header + text.render_samples(tokens))
  return str(path)


def replicate(tree):
  """A copy of a sharded pytree replicated on every device of its mesh."""
  leaves = jax.tree.leaves(tree)
  if not leaves or not hasattr(leaves[0], 'sharding'):
    return tree
  mesh = leaves[0].sharding.mesh
  return jax.jit(lambda t: t, out_shardings=sharding.replicated(mesh))(tree)

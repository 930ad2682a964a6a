"""Trained runs loaded for inference: a model with its parameters, and a run's
entropy model as a scoring function. This is how the sampling and eval
commands, calibration, the data chain and the benchmarks load what training
wrote (the models themselves never read checkpoints)."""

from typing import Any, NamedTuple

import jax

from bltdiff import entropy, patching
from bltdiff.errors import BltdiffError
from bltdiff.models import byte_ar
from bltdiff.training import checkpointing, ema, samples, state


class LoadedRun(NamedTuple):
  config: Any  # the run's saved config
  model: Any
  params: Any  # the EMA of the parameters when the run keeps one (train.ema_rate > 0)
  step: int
  setup: state.RunSetup  # mesh, shardings, ... (what eval needs)


def load_for_inference(workdir: str, step=None) -> LoadedRun:
  """The latest (or given) checkpoint of a trained run, with its saved config.
  A latent model gets its run's entropy model (loaded on first use) to patch
  prompts. The parameters are the EMA when the run keeps one, as in the
  run's own eval and samples (bltdiff.training.ema)."""
  config = checkpointing.load_config(workdir)
  run = state.setup(config)
  manager = checkpointing.make_manager(workdir)
  train_state, step = checkpointing.restore(manager, run.abstract_state, step=step)
  if train_state is None:
    raise BltdiffError(f'no checkpoint in {checkpointing.checkpoint_dir(workdir)}; train first')
  patch_config = config.get('patching')
  if (patch_config is not None and patch_config.mode in patching.ENTROPY_MODES
      and patch_config.entropy_model):
    run.model.entropy_fn = LazyEntropyFn(patch_config.entropy_model)
  return LoadedRun(config, run.model, ema.inference_params(train_state), step, run)


def restore_params(workdir: str, step=None):
  """(config, params) of the latest (or given) checkpoint of a run."""
  loaded = load_for_inference(workdir, step)
  return loaded.config, loaded.params


def load_entropy_model(workdir: str, *, chunk_len: int | None = None,
                       overlap: int | None = None, batch_size: int = 16) -> entropy.EntropyModel:
  """The latest checkpoint of a byte AR run in `workdir` as an EntropyModel;
  chunk_len defaults to the run's training sequence length."""
  config, params = restore_params(workdir)
  if config.model.kind != 'byte_ar':
    raise BltdiffError(f'{workdir} holds a {config.model.kind!r} model, not byte_ar')
  if not all(x.is_fully_replicated for x in jax.tree.leaves(params)):
    # Each process scores on its own devices with a whole copy (a collective:
    # every process of the job loads the model together).
    params = samples.replicate(params)
  module = byte_ar.make_byte_ar(config.model)
  return entropy.entropy_model_from_module(
      module, params, chunk_len=chunk_len or int(config.data.seq_len),
      overlap=overlap, batch_size=batch_size)


def load_entropy_fn(workdir: str, **kwargs):
  """docs -> per-byte entropies (float32 [len(doc)], nats) with the model in workdir."""
  return load_entropy_model(workdir, **kwargs)


class LazyEntropyFn:
  """An entropy function that restores its model on the first call: sampling
  without a prompt never pays for it."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self._model = None

  def __call__(self, docs):
    if self._model is None:
      self._model = load_entropy_model(self.workdir)
    return self._model(docs)

"""The data chain of a run, resolved before the model is built.

Byte models read prepared shards (`data.prepared_dir`, or `data.source`
prepared into WORKDIR/data). Latent MDLM runs BLT's chain first:

  1. entropy model: `patching.entropy_model` (a trained byte AR run), or the
     run config's `entropy_model` section trained into WORKDIR/entropy_model;
  2. shards with per-byte entropies stored beside the bytes (WORKDIR/data);
  3. calibration of the patcher's threshold to `patching.calibrate_target_mean`
     bytes per patch on the train split (WORKDIR/calibration.json).

Each step is skipped when its output is already there, so resuming (and eval)
is cheap. Every file is read and written through etils.epath (WORKDIR may be
gs://). In a multi-process run every process calls this: the entropy model
trains on all devices of the job; the shards are split between the processes
(each scores the entropies of its own shards on its own devices), which meet
at a barrier before process 0 writes the manifest; process 0 writes the
calibration. `prepare_run_data` returns the config with what it resolved
(data.prepared_dir, data.use_entropies, the calibrated patcher fields,
patching.entropy_model), which is what the run saves as its config.json.
"""

import json

import jax
import numpy as np
from absl import logging
from etils import epath

from bltdiff import calibration, patching
from bltdiff.data import pair_batches, pipeline
from bltdiff.errors import ConfigError
from bltdiff.training import checkpointing, loop, restore
from data_prep import manifest, writer


def prepare_run_data(config, workdir: str):
  """The config with data.prepared_dir (and, for latent MDLM, the patcher)
  resolved; the shards exist when it returns."""
  if config.get('patching') is not None and config.model.kind == 'latent_mdlm':
    return _latent_chain(config, workdir)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.prepared_dir = pipeline.ensure_prepared(config.data, workdir, **processes())
  return config


def processes() -> dict:
  """data_prep.writer.prepare's process arguments for this JAX job: this
  process's share of the shards and a barrier across all processes."""
  if jax.process_count() == 1:
    return {}
  from jax.experimental import multihost_utils
  return dict(process_index=jax.process_index(), process_count=jax.process_count(),
              barrier=multihost_utils.sync_global_devices)


def trained_entropy_model(config, workdir: str) -> str:
  """The entropy model's workdir, trained here first if patching.entropy_model is empty."""
  given = config.patching.entropy_model
  if given:
    return given
  ent_config = config.get('entropy_model')
  if ent_config is None:
    raise ConfigError('entropy_model: patching.mode needs entropies, and neither '
                      'patching.entropy_model (a trained workdir) nor an entropy_model run '
                      'config is given')
  ent_dir = str(epath.Path(workdir) / 'entropy_model')
  latest = checkpointing.make_manager(ent_dir).latest_step() \
      if epath.Path(checkpointing.checkpoint_dir(ent_dir)).is_dir() else None
  if latest is None or latest < ent_config.train.num_steps:
    loop.train_and_evaluate(prepare_run_data(ent_config, ent_dir), ent_dir)
  return ent_dir


def calibrate_patcher(config, prepared_dir: str, workdir: str, use_entropies: bool) -> dict:
  """Fits the patcher's free parameter to patching.calibrate_target_mean bytes
  per patch on a sample of the train split; cached in workdir/calibration.json
  (every process computes the same result; process 0 writes it)."""
  p = config.patching
  path = epath.Path(workdir) / 'calibration.json'

  key = dict(target_mean=float(p.calibrate_target_mean), mode=p.mode,
             max_patch_len=int(p.max_patch_len),
             prepared_dir=checkpointing.relative_to_run(prepared_dir, workdir),
             seq_len=int(config.data.seq_len), sample='uniform', seed=int(config.seed))
  if path.exists():
    cached = json.loads(path.read_text())
    if cached.get('key') == key:
      return cached
  patch_config = patching.PatchConfig.from_config(p)

  def packed(split):
    tokens, ents = calibration.read_prepared_sample(
        prepared_dir, int(p.calibrate_bytes), with_entropies=use_entropies, split=split,
        seed=config.seed)
    if not tokens:
      return None
    if ents is None:
      ents = [np.zeros(len(t), np.float32) for t in tokens]
    return calibration.pack_documents(tokens, ents, int(config.data.seq_len))

  result = calibration.calibrate(*packed('train'), patch_config, float(p.calibrate_target_mean))
  # The same sample size from the validation split: does the mean hold off the fitted data?
  validation = packed('validation')
  result['validation_mean_patch_bytes'] = None if validation is None else (
      calibration.mean_patch_bytes(*validation, result, patch_config))
  logging.info('patcher calibrated on a random sample of the train split: %.3f bytes per patch '
               '(target %.3f); on the validation split: %s', result['mean_patch_bytes'],
               result['target_mean'], result['validation_mean_patch_bytes'])
  result['key'] = key
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
  return result


def _latent_chain(config, workdir: str):
  config = config.copy_and_resolve_references()
  needs_entropies = config.patching.mode in patching.ENTROPY_MODES
  with config.unlocked():
    if config.data.prepared_dir:
      prepared_dir = pipeline.ensure_prepared(config.data, workdir)  # checks it
      if needs_entropies and not manifest.read_manifest(
          prepared_dir, pair_batches.data_format(config.data))['has_entropies']:
        raise ConfigError(f'data.prepared_dir: {prepared_dir} has no entropies, which '
                          f'patching.mode={config.patching.mode!r} needs (prepare it with '
                          f'--entropy_model, or leave prepared_dir empty)')
    elif needs_entropies:
      ent_dir = trained_entropy_model(config, workdir)
      prepared_dir = str(epath.Path(workdir) / 'data')
      writer.prepare(config.data.source, prepared_dir, **pipeline.prepare_kwargs(config.data),
                     entropy_fn=restore.load_entropy_fn(ent_dir), **processes())
      config.patching.entropy_model = ent_dir
    else:
      prepared_dir = pipeline.ensure_prepared(config.data, workdir, **processes())
    config.data.prepared_dir = prepared_dir
    config.data.use_entropies = needs_entropies
    if config.patching.calibrate_target_mean > 0 and config.patching.mode != 'byte':
      result = calibrate_patcher(config, prepared_dir, workdir, needs_entropies)
      for field in ('threshold', 'monotonic_threshold', 'static_size'):
        config.patching[field] = result[field]
  return config

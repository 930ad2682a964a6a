"""The inference export: one self-contained, versioned orbax directory per
trained model, which samples on any machine, CPU included.

Layout (one orbax checkpoint, written atomically by `ocp.Checkpointer`):

  DIR/params/            the model's parameters (orbax StandardSave): the EMA
                         when the run keeps one, else the parameters; float32,
                         or bfloat16 with dtype='bfloat16' (half the bytes)
  DIR/entropy_params/    latent MDLM with entropy patching only: the entropy
                         model's parameters, always float32 (prompts must be cut
                         into the same patches as the training data)
  DIR/_CHECKPOINT_METADATA   orbax's step metadata; its custom_metadata holds
                         the export's own metadata (below)

Metadata (JSON, no absolute path anywhere):
  format          'bltdiff-export'
  format_version  FORMAT_VERSION; a reader accepts only its own version
  step            the training step exported
  weights         'ema' (train.ema_rate > 0) or 'params'
  ema_rate, dtype the run's train.ema_rate; the stored parameters' dtype
  config          the run config the model needs: seed, model, sample, data
                  (seq_len, use_entropies only) and, for latent MDLM, patching
                  with the calibrated threshold (patching.entropy_model
                  blanked: the entropy model is inside)
  entropy_model   None, or {model, data: {seq_len}} of the entropy model (its
                  seq_len is the chunk length it scores with, as in training)

There is no optimizer state, no data iterator state and no train section.
Loading restores every parameter into the dtype the model initializes it with
(float32 master weights): a bfloat16 export is rounded once, on disk, and then
runs the same code path as a float32 one; with model.dtype=bfloat16 the
matmuls see exactly the values they saw in training (already rounded to
bfloat16), only the float32 parts (norm scales, the readout) lose precision.
Parameters are restored whole on this process's first device, whatever mesh
trained them.
"""

import json
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from bltdiff import entropy, patching
from bltdiff.errors import BltdiffError
from bltdiff.models import byte_ar, registry
from bltdiff.training import restore, state

FORMAT = 'bltdiff-export'
FORMAT_VERSION = 1
DTYPES = ('float32', 'bfloat16')
ITEMS = ('params', 'entropy_params')


class Exported(NamedTuple):
  """A loaded export: what the sampling command and `bltdiff.load` use."""
  config: Any  # the export's config (see the module docstring)
  model: Any  # latent MDLM: entropy_fn set from the export's entropy model
  params: Any
  step: int
  metadata: dict


def _path(directory) -> epath.Path:
  return epath.Path(directory if '://' in str(directory) else str(epath.Path(directory).resolve()))


def portable_config(config, *, entropy_model: bool = False) -> dict:
  """The sections of a run config that inference needs, as plain JSON."""
  c = json.loads(config.to_json_best_effort())
  out = {'seed': c['seed'], 'model': c['model'],
         'data': {'seq_len': c['data']['seq_len'], 'use_entropies': c['data']['use_entropies']}}
  if entropy_model:
    return out
  out['sample'] = c['sample']
  if 'patching' in c:
    out['patching'] = dict(c['patching'], entropy_model='')
  return out


def _checkpointer() -> ocp.Checkpointer:
  """Orbax with the export's items named (so that reading one is quiet)."""
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      **{item: ocp.StandardCheckpointHandler() for item in ITEMS}))


def _cast(tree, dtype: str):
  floats = lambda x: jnp.issubdtype(x.dtype, jnp.floating)
  return jax.tree.map(lambda x: x.astype(dtype) if floats(x) else x, tree)


def write_export(workdir: str, export_dir: str, dtype: str = 'float32') -> dict:
  """Exports the latest checkpoint of the run in workdir to export_dir (which
  must not exist). Returns the metadata. Every process calls it (orbax writes
  sharded parameters cooperatively)."""
  if dtype not in DTYPES:
    raise BltdiffError(f'--export_dtype: expected one of {DTYPES}, got {dtype!r}')
  path = _path(export_dir)
  if path.exists():
    raise BltdiffError(f'--export_dir: {export_dir} already exists; give a new directory')
  loaded = restore.load_for_inference(workdir)
  config = loaded.config
  items = {'params': ocp.args.StandardSave(_cast(loaded.params, dtype))}
  entropy_config = None
  p = config.get('patching')
  if config.model.kind == 'latent_mdlm' and p is not None and p.mode in patching.ENTROPY_MODES:
    ent_config, ent_params = restore.restore_params(p.entropy_model)
    entropy_config = portable_config(ent_config, entropy_model=True)
    items['entropy_params'] = ocp.args.StandardSave(ent_params)
  metadata = dict(format=FORMAT, format_version=FORMAT_VERSION, step=int(loaded.step),
                  weights='ema' if config.train.ema_rate > 0 else 'params',
                  ema_rate=float(config.train.ema_rate), dtype=dtype,
                  config=portable_config(config), entropy_model=entropy_config)
  with _checkpointer() as checkpointer:
    checkpointer.save(path, args=ocp.args.Composite(**items), custom_metadata=metadata)
  return metadata


def read_metadata(export_dir: str) -> dict:
  """The export's metadata, checked: a missing, foreign, partial or
  other-version directory raises BltdiffError with one line saying which."""
  path = _path(export_dir)
  if not path.is_dir():
    raise BltdiffError(f'{export_dir}: no such export directory')
  try:
    with _checkpointer() as checkpointer:
      metadata = checkpointer.metadata(path).custom_metadata or {}
  except Exception:  # an unreadable or foreign _CHECKPOINT_METADATA: not ours
    metadata = {}
  if metadata.get('format') != FORMAT:
    hint = (' it is a training run: sample it with --workdir, or export it with --mode=export'
            if (path / 'config.json').exists() else ' write one with --mode=export')
    raise BltdiffError(f'{export_dir}: not a bltdiff export (no export metadata);{hint}')
  if metadata.get('format_version') != FORMAT_VERSION:
    raise BltdiffError(f'{export_dir}: export format version {metadata.get("format_version")}, '
                       f'but this bltdiff reads version {FORMAT_VERSION}; export the run again '
                       f'with this version')
  for item in ITEMS if metadata['entropy_model'] else ITEMS[:1]:
    if not (path / item).is_dir():
      raise BltdiffError(f'{export_dir}: incomplete export: {item}/ is missing (copy the whole '
                         f'directory, or export again)')
  return metadata


def _restore(path, item: str, model, config, export_dir: str):
  """One parameter item, into the model's own shapes and dtypes, on one device."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          nn.unbox(state.abstract_params(model, config)))
  try:
    with _checkpointer() as checkpointer:
      restored = checkpointer.restore(
          path, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)}))
  except Exception as e:  # orbax's own errors are pages long: keep the first line
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise BltdiffError(f'{export_dir}: {item}/ does not restore into this model ({first}); '
                       f'export the run again') from e
  return restored[item]


def load_export(export_dir: str) -> Exported:
  """The model of an export with its parameters (and, for latent MDLM with
  entropy patching, its entropy model set as `model.entropy_fn`)."""
  metadata = read_metadata(export_dir)
  path = _path(export_dir)
  config = ml_collections.ConfigDict(metadata['config'])
  model = registry.get_model(config)
  params = _restore(path, 'params', model, config, export_dir)
  ent = metadata['entropy_model']
  if ent is not None:
    ent_config = ml_collections.ConfigDict(ent)
    ent_params = _restore(path, 'entropy_params', registry.get_model(ent_config), ent_config,
                          export_dir)
    model.entropy_fn = entropy.entropy_model_from_module(
        byte_ar.make_byte_ar(ent_config.model), ent_params,
        chunk_len=int(ent_config.data.seq_len))
  return Exported(config, model, params, int(metadata['step']), metadata)


def is_training_run(directory: str) -> bool:
  """True for a training run directory (it has config.json; an export has none)."""
  return (_path(directory) / 'config.json').exists()

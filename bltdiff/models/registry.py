"""Model registry: config.model.kind -> the `contract.Model` implementation."""

import importlib

from bltdiff.errors import ConfigError

# kind -> 'module:ClassName'; imported on first use, so a kind's dependencies
# load only when a run uses it.
MODEL_KINDS = {
    'byte_mdlm': 'bltdiff.models.byte_mdlm:ByteMDLM',
    'byte_ar': 'bltdiff.models.byte_ar:ByteARModel',
    'latent_mdlm': 'bltdiff.latent.diffusion:LatentMDLM',
}


def model_class(kind: str):
  if kind not in MODEL_KINDS:
    raise ConfigError(f'model.kind: unknown model kind {kind!r}; expected one of '
                      f'{", ".join(sorted(MODEL_KINDS))}')
  module_name, class_name = MODEL_KINDS[kind].split(':')
  return getattr(importlib.import_module(module_name), class_name)


def get_model(config):
  """The model object for a whole run config (model, data, patching...)."""
  return model_class(config.model.kind).from_config(config)

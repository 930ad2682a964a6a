"""Model registry: config.model.kind -> the `contract.Model` implementation."""

import importlib

from bltdiff.data import pair_batches
from bltdiff.errors import ConfigError

# kind -> 'module:ClassName'; imported on first use, so a kind's dependencies
# load only when a run uses it.
MODEL_KINDS = {
    'byte_mdlm': 'bltdiff.models.byte_mdlm:ByteMDLM',
    'byte_ar': 'bltdiff.models.byte_ar:ByteARModel',
    'latent_mdlm': 'bltdiff.latent.diffusion:LatentMDLM',
}


# The same kinds trained on (source, target) pairs (data.format = 'pairs'):
# the source given, the loss on the target (docs/design.md, "Conditional training").
CONDITIONAL_KINDS = {
    'byte_mdlm': 'bltdiff.models.conditional:ConditionalByteMDLM',
    'byte_ar': 'bltdiff.models.conditional:ConditionalByteAR',
    'latent_mdlm': 'bltdiff.latent.conditional:ConditionalLatentMDLM',
}


def model_class(kind: str, data_format: str = 'text'):
  if kind not in MODEL_KINDS:
    raise ConfigError(f'model.kind: unknown model kind {kind!r}; expected one of '
                      f'{", ".join(sorted(MODEL_KINDS))}')
  kinds = CONDITIONAL_KINDS if data_format == 'pairs' else MODEL_KINDS
  module_name, class_name = kinds[kind].split(':')
  return getattr(importlib.import_module(module_name), class_name)


def get_model(config):
  """The model object for a whole run config (model, data, patching...)."""
  return model_class(config.model.kind, pair_batches.data_format(config.data)).from_config(config)

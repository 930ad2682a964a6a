"""Model registry: config.model.kind -> the object the trainer and samplers use.

A model object holds no parameters. It offers
  init(key, batch) -> params (with logical-partitioning boxes)
  loss(params, batch, key, train) -> (scalar loss, metrics with 'bpb')
  sample(params, key, *, num_samples, length, steps, cached, top_p, prefix) -> (tokens, stats)
and may offer validate(config) raising ConfigError for kind-specific fields.
"""

import importlib

# kind -> 'module:ClassName'; imported lazily so a kind's dependencies load only when used.
MODEL_KINDS = {
    'byte_mdlm': 'bltdiff.byte_mdlm:ByteMDLM',
    'byte_ar': 'bltdiff.byte_ar:ByteARModel',
    'latent_mdlm': 'bltdiff.latent_mdlm:LatentMDLM',
}


def model_class(kind: str):
  from bltdiff.errors import ConfigError
  if kind not in MODEL_KINDS:
    raise ConfigError(f'model.kind: unknown model kind {kind!r}; expected one of '
                      f'{", ".join(sorted(MODEL_KINDS))}')
  module_name, class_name = MODEL_KINDS[kind].split(':')
  return getattr(importlib.import_module(module_name), class_name)


def get_model(config):
  """Builds the model object for a whole run config (model, data, patching...)."""
  cls = model_class(config.model.kind)
  return cls.from_config(config) if hasattr(cls, 'from_config') else cls(config.model)

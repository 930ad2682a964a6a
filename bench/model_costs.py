"""Parameter counts and FLOPs per byte of the latent MDLM configs.

  python bench/model_costs.py [--configs=configs/demo.py,...]

For each config: parameters (total and per part: local encoder, latent
transformer, local decoder) and FLOPs per byte of one training step
(forward + backward of the loss) and of one denoiser call, both counted by
`bltdiff.flops` (machine-independent), traced with
abstract inputs, so nothing is allocated and no data or entropy model is
needed. Patching is static here (same shapes as the config's mode; FLOPs do
not depend on where patches start).

And what one unprompted sample of seq_len bytes costs per byte with N latent
calls (--sample_calls): N calls of the latent transformer, the local decoder
once per slot and the local encoder once per slot (what the cached sampler
does when every slot is revealed, `bltdiff.sampling_cost`), with the local
decoder's share of it. These need the adapter's callbacks on real parameters,
so the model is initialised (on the host). --set changes config fields first,
e.g. the decoder_x2 recipe on the demo:

  python bench/model_costs.py --configs=configs/demo.py \
      --set=model.dec_dim=128,model.dec_heads=4,model.dec_layers=2,model.dec_mlp_dim=384
"""

import ast
import importlib.util
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bltdiff import flops, sampling_cost
from bltdiff.models import registry
from bltdiff.training import state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ('configs/demo.py', 'configs/latent_gutenberg.py', 'configs/owt.py')


def load_config(path):
  spec = importlib.util.spec_from_file_location('cfg', os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def param_counts(params) -> dict:
  sizes = {k: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v)) for k, v in params.items()}
  parts = {'encoder': sizes.get('encoder', 0), 'latent': sizes.get('latent', 0) + sizes.get(
      'mask_vector', 0) + sizes.get('to_decoder', 0), 'decoder': sizes.get('decoder', 0)}
  parts['total'] = sum(sizes.values())
  return parts


def apply_settings(config, settings) -> None:
  """Sets 'a.b=value' fields (value parsed as a Python literal when it is one)."""
  with config.unlocked():
    for setting in settings:
      field, sep, text = setting.partition('=')
      if not sep:
        raise ValueError(f'--set wants field=value, got {setting!r}')
      try:
        value = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        value = text
      section, _, name = field.rpartition('.')
      target = config
      for part in filter(None, section.split('.')):
        target = target[part]
      if name not in target:
        raise KeyError(f'--set: the config has no field {field!r}')
      target[name] = value


def sample_costs(model, config, calls, num_samples: int = 1) -> dict:
  """FLOPs per byte of one unprompted sample with each number of latent calls
  in `calls`, and the local decoder's share of it."""
  params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0),
                                        state.example_batch(config, num_samples)))
  n = num_samples * config.data.seq_len
  per_call = sampling_cost.callback_flops(model, params, 1.0, num_samples, config.data.seq_len)
  out = {}
  for c in calls:
    total = c * per_call['predict'] + per_call['propose'] + per_call['commit']
    out[str(c)] = dict(flops_per_byte=total / n, decoder_share=per_call['propose'] / total)
  return out


def costs(config, batch_size: int = 1, sample_calls=()) -> dict:
  """Params and FLOPs per byte of one model config (abstract tracing only;
  sample_calls: also the sampling costs of `sample_costs`, on initialised
  parameters)."""
  with config.unlocked():
    config.data.use_entropies = False
    config.patching.mode = 'static'
    config.patching.static_size = max(1, round(config.patching.calibrate_target_mean or 4.5))
  model = registry.get_model(config)
  batch = state.example_batch(config, batch_size)
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
  key = jax.random.PRNGKey(0)
  step = jax.value_and_grad(lambda p, b, k: model.loss(p, b, k, True)[0])
  train_flops = flops.count(step, abstract, batch, key)
  pc = model.patch_config
  shape = (batch_size, pc.num_slots, pc.max_patch_len)
  call_flops = flops.count(lambda p, t, v: model.denoise(p, t, v, v), abstract,
                           jax.ShapeDtypeStruct(shape, jnp.int32),
                           jax.ShapeDtypeStruct(shape[:2], jnp.bool_))
  n = batch_size * config.data.seq_len
  out = dict(params=param_counts(abstract), train_flops_per_byte=train_flops / n,
             denoiser_call_flops_per_byte=call_flops / n, seq_len=config.data.seq_len,
             num_slots=pc.num_slots, decoder_mode=config.model.decoder_mode)
  if sample_calls:
    out['sample'] = sample_costs(model, config, sample_calls)
  return out


def define_flags():
  """The script's flags (defined when it runs as a script, so that another
  benchmark can import it)."""
  flags.DEFINE_list('configs', list(DEFAULT_CONFIGS), 'Run config files (latent MDLM).')
  flags.DEFINE_list('set', [], 'Config fields changed in every config: field=value,...')
  flags.DEFINE_list('sample_calls', ['8', '64'], 'Latent calls per sample to cost a sample '
                    'at (empty: no sampling costs, nothing initialised).')


def main(argv):
  del argv
  rows = {}
  for path in flags.FLAGS.configs:
    config = load_config(path)
    apply_settings(config, flags.FLAGS.set)
    rows[path] = costs(config, sample_calls=[int(c) for c in flags.FLAGS.sample_calls])
    r = rows[path]
    p = r['params']
    print(f"{path}: params {p['total'] / 1e6:.2f}M (encoder {p['encoder'] / 1e6:.2f}M, latent "
          f"{p['latent'] / 1e6:.2f}M, decoder {p['decoder'] / 1e6:.2f}M); train "
          f"{r['train_flops_per_byte'] / 1e6:.2f} MFLOPs/byte, denoiser call "
          f"{r['denoiser_call_flops_per_byte'] / 1e6:.2f} MFLOPs/byte "
          f"(seq_len {r['seq_len']}, {r['num_slots']} slots, decoder {r['decoder_mode']})",
          flush=True)
    for calls, cost in r.get('sample', {}).items():
      print(f"  a sample with {calls} latent calls: {cost['flops_per_byte'] / 1e6:.2f} MFLOPs/byte, "
            f"local decoder {100 * cost['decoder_share']:.0f}%", flush=True)
  json.dump(rows, sys.stdout, indent=1)
  print()


if __name__ == '__main__':
  define_flags()
  app.run(main)

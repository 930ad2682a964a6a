"""The sampling command: --mode=sample.

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo --mode=sample \
      [--sampler=cached] [--steps=128] [--num_samples=4] [--prompt="def "] \
      [--prompt_file=F] [--output=samples] [--top_p=0.9] [--seed=0]

Writes OUTPUT.npy (the tokens, lossless: bytes and document boundaries),
OUTPUT.bin (the samples' raw bytes, concatenated, boundaries dropped) and
OUTPUT.txt (readable; invalid UTF-8 shown replaced), and prints the number of
network calls, the wall time and bytes/s of the run.
"""

import os
import time

import jax
import numpy as np
from absl import flags

from bltdiff import checkpointing, text, train
from bltdiff.errors import BltdiffError, ConfigError

_SAMPLER = flags.DEFINE_string('sampler', None, 'Sampler (default: config.sample.sampler).')
_STEPS = flags.DEFINE_integer('steps', None, 'Denoising steps (default: config.sample.steps).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, 'Number of samples.')
_LENGTH = flags.DEFINE_integer('length', None, 'Bytes per sample (default: data.seq_len).')
_PROMPT = flags.DEFINE_string('prompt', None, 'Text the samples start with.')
_PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'File whose bytes the samples start with.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output path prefix (default: WORKDIR/samples/sample).')
_TOP_P = flags.DEFINE_float('top_p', None, 'Nucleus sampling mass (default: config.sample.top_p).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')


def read_prompt(prompt: str | None, prompt_file: str | None) -> bytes | None:
  """The prompt's raw bytes, or None. An empty prompt means no prompt."""
  if prompt is not None and prompt_file is not None:
    raise ConfigError('--prompt and --prompt_file: give at most one')
  if prompt_file is not None:
    if not os.path.isfile(prompt_file):
      raise BltdiffError(f'--prompt_file: {prompt_file} does not exist')
    with open(prompt_file, 'rb') as f:
      data = f.read()
  elif prompt is not None:
    data = prompt.encode('utf-8', errors='surrogateescape')
  else:
    return None
  return data or None


def check_prompt(prompt: bytes | None, length: int):
  if prompt is not None and len(prompt) >= length:
    raise ConfigError(f'--prompt: {len(prompt)} bytes leave no room in a sample of {length} '
                      f'bytes; shorten the prompt or raise --length')


def run_sample_command(config, workdir: str):
  saved = checkpointing.load_config(workdir)
  # The architecture comes from the trained run; sampling options from flags/config.
  config = saved.copy_and_resolve_references()
  s = config.sample
  sampler = _SAMPLER.value or s.sampler
  steps = s.steps if _STEPS.value is None else _STEPS.value
  num_samples = _NUM_SAMPLES.value or s.num_samples
  length = _LENGTH.value or config.data.seq_len
  top_p = s.top_p if _TOP_P.value is None else _TOP_P.value
  if steps <= 0:
    raise ConfigError(f'--steps: must be positive, got {steps}')
  if num_samples <= 0:
    raise ConfigError(f'--num_samples: must be positive, got {num_samples}')
  if not 0.0 < top_p <= 1.0:
    raise ConfigError(f'--top_p: must be in (0, 1], got {top_p}')
  if length > config.data.seq_len:
    raise ConfigError(f'--length: {length} exceeds the model context data.seq_len='
                      f'{config.data.seq_len}')
  prompt = read_prompt(_PROMPT.value, _PROMPT_FILE.value)
  check_prompt(prompt, length)

  state, model, step = train.restore_state_for_inference(config, workdir)
  if state is None:
    raise BltdiffError(f'--mode=sample: no checkpoint in {workdir}; train first')
  prefix = None if prompt is None else np.frombuffer(prompt, np.uint8).astype(np.int32)
  kwargs = dict(num_samples=num_samples, length=length, steps=steps, sampler=sampler,
                top_p=top_p, prefix=prefix)
  key = jax.random.PRNGKey(_SEED.value)
  # First call compiles; the timed call is the second, with a different key.
  model.sample(state.params, jax.random.fold_in(key, 1), **kwargs)
  start = time.perf_counter()
  tokens, stats = model.sample(state.params, key, **kwargs)
  wall = time.perf_counter() - start

  out = _OUTPUT.value or os.path.join(workdir, 'samples', 'sample')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.save(out + '.npy', tokens.astype(np.int16))
  with open(out + '.bin', 'wb') as f:
    f.write(b''.join(text.to_bytes(row) for row in tokens))
  with open(out + '.txt', 'w', encoding='utf-8') as f:
    f.write(text.render_samples(tokens))
  generated = num_samples * (length - (0 if prefix is None else len(prefix)))
  print(text.render_samples(tokens))
  print(f'checkpoint step {step} | sampler {sampler} | steps {stats["steps"]} | '
        f'network calls {stats["latent_calls"]} | wall {wall:.3f}s | '
        f'{generated / wall:.1f} bytes/s | written to {out}.{{txt,bin,npy}}')
  return tokens, stats

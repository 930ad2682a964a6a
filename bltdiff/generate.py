"""The sampling command: --mode=sample.

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo --mode=sample \
      [--sampler=cached|ancestral|adaptive|confidence] [--steps=128] [--num_samples=4] \
      [--prompt="def " | --prompt_file=F] [--suffix="return x" | --suffix_file=F] [--gap=64] \
      [--total_length=1024] [--output=samples] [--top_p=0.9] [--seed=0]

Prompting: the prompt's bytes stay visible at the start. Infilling: with a
suffix, the samples are prompt + gap + suffix, and only the gap (--gap bytes,
default: the rest of the context) is generated. --total_length beyond the
context generates semi-autoregressively: blocks of sample.block_length bytes
(default half the context), each conditioned on the previous context.

Writes OUTPUT.npy (the tokens, lossless: bytes and document boundaries),
OUTPUT.bin (the samples' raw bytes, concatenated, boundaries dropped) and
OUTPUT.txt (readable; invalid UTF-8 shown replaced), and prints the number of
network calls, the wall time and bytes/s of the run.
"""

import functools
import os
import time

import jax
import numpy as np
from bltdiff import text, vocab
from bltdiff.errors import BltdiffError, ConfigError
from bltdiff.sample_flags import (GAP, LENGTH, NUM_SAMPLES, OUTPUT, PROMPT, PROMPT_FILE, SEED,
                                  SUFFIX, SUFFIX_FILE, TOTAL_LENGTH, option_overrides)
from bltdiff.sampling.options import SamplerOptions
from bltdiff.training import restore


def read_prompt(prompt: str | None, prompt_file: str | None, name: str = 'prompt') -> bytes | None:
  """The raw bytes of --{name} or --{name}_file, or None; empty means none.

  Text given on the command line is encoded as UTF-8 (undecodable bytes that
  the shell passed through are kept as they were)."""
  if prompt is not None and prompt_file is not None:
    raise ConfigError(f'--{name} and --{name}_file: give at most one')
  if prompt_file is not None:
    if not os.path.isfile(prompt_file):
      raise BltdiffError(f'--{name}_file: {prompt_file} does not exist')
    with open(prompt_file, 'rb') as f:
      data = f.read()
  elif prompt is not None:
    data = prompt.encode('utf-8', errors='surrogateescape')
  else:
    return None
  return data or None


def check_prompt(prompt: bytes | None, suffix: bytes | None, length: int):
  given = len(prompt or b'') + len(suffix or b'')
  if given >= length:
    raise ConfigError(f'--prompt: {given} given bytes (prompt + suffix) leave no room in a '
                      f'sample of {length} bytes; shorten them or raise --length/--gap')


def as_tokens(data: bytes | None):
  return None if data is None else np.frombuffer(data, np.uint8).astype(np.int32)


def strip_padding(row) -> np.ndarray:
  """A row's generated symbols: PAD marks where a shorter sample ended."""
  row = np.asarray(row)
  return row[row != vocab.PAD]


def numeric_stats(stats: dict) -> dict:
  return {k: v for k, v in stats.items() if isinstance(v, (int, float))}


def semi_autoregressive(sample_fn, prompt, total_length: int, context: int, block: int):
  """Samples of total_length bytes (> context) in blocks: each call of
  sample_fn(prefix, length) -> (tokens [num_samples, length], stats) keeps the
  last context − block bytes of a row visible and generates the rest of the
  context. Rows may come back shorter than asked (latent MDLM draws its patch
  count); each continues from its own history.
  Returns (tokens [num_samples, total_length] PAD-padded, summed stats)."""
  if not 0 < block < context:
    raise ConfigError(f'sample.block_length: {block} must be in (0, {context}) for '
                      f'--total_length beyond the context')
  tokens, stats = sample_fn(prompt, context)
  totals = numeric_stats(stats)
  rows = [strip_padding(r) for r in tokens]
  while min(len(r) for r in rows) < total_length:
    keeps = [r[-(context - block):] for r in rows]
    new, stats = sample_fn(keeps, context, batched_prefix=True)
    grown = [np.concatenate([r, strip_padding(n)[len(k):]]) for r, k, n in zip(rows, keeps, new)]
    if all(len(g) == len(r) for g, r in zip(grown, rows)):
      break  # nothing new was generated: stop rather than loop
    rows = grown
    for k, v in numeric_stats(stats).items():
      totals[k] = totals.get(k, 0) + v
  out = np.full((len(rows), total_length), vocab.PAD, np.int32)
  for i, r in enumerate(rows):
    out[i, :min(len(r), total_length)] = r[:total_length]
  return out, totals


def run_sample_command(workdir: str):
  """Samples from the latest checkpoint of the run in workdir: the
  architecture comes from the trained run, the sampler options from the flags
  over the run's config.sample."""
  loaded = restore.load_for_inference(workdir)
  config, model, params, step = loaded.config, loaded.model, loaded.params, loaded.step
  s = config.sample
  options = SamplerOptions.from_config(s, option_overrides())
  options.check(where='--')
  num_samples = s.num_samples if NUM_SAMPLES.value is None else NUM_SAMPLES.value
  length = config.data.seq_len if LENGTH.value is None else LENGTH.value
  if num_samples <= 0:
    raise ConfigError(f'--num_samples: must be positive, got {num_samples}')
  if length <= 0:
    raise ConfigError(f'--length: must be positive, got {length}')
  if length > config.data.seq_len:
    raise ConfigError(f'--length: {length} exceeds the model context data.seq_len='
                      f'{config.data.seq_len}')
  prompt = read_prompt(PROMPT.value, PROMPT_FILE.value)
  suffix = read_prompt(SUFFIX.value, SUFFIX_FILE.value, name='suffix')
  if GAP.value is not None:
    if GAP.value <= 0:
      raise ConfigError(f'--gap: must be positive, got {GAP.value}')
    length = len(prompt or b'') + GAP.value + len(suffix or b'')
    if length > config.data.seq_len:
      raise ConfigError(f'--gap: prompt + gap + suffix = {length} bytes exceed the context '
                        f'data.seq_len={config.data.seq_len}')
  check_prompt(prompt, suffix, length)
  total_length = TOTAL_LENGTH.value
  if total_length is not None:
    if suffix is not None:
      raise ConfigError('--total_length: semi-autoregressive generation takes no --suffix')
    if total_length <= length:
      raise ConfigError(f'--total_length: {total_length} must exceed the sample length '
                        f'{length} (blocks beyond the context); omit it otherwise')
  key = jax.random.PRNGKey(SEED.value)

  def sample_fn(prefix, n, batched_prefix=False, key=key):
    common = dict(num_samples=num_samples, length=n)
    if not batched_prefix:
      return model.sample(params, key, options, prefix=prefix, suffix=as_tokens(suffix),
                          **common)
    # Rows continue from different histories: one call per row, keys folded per row.
    rows = [model.sample(params, jax.random.fold_in(key, 1000 + i), options, prefix=row,
                         **dict(common, num_samples=1)) for i, row in enumerate(prefix)]
    return np.concatenate([r[0] for r in rows]), {
        k: sum(numeric_stats(r[1])[k] for r in rows) / len(rows)
        for k in numeric_stats(rows[0][1])}

  def run(key):
    fn = functools.partial(sample_fn, key=key)
    if total_length is not None:
      block = s.block_length or config.data.seq_len // 2
      return semi_autoregressive(fn, as_tokens(prompt), total_length, length, block)
    return fn(as_tokens(prompt), length)

  run(jax.random.fold_in(key, 1))  # compiles; the timed call below uses `key`
  start = time.perf_counter()
  tokens, stats = run(key)
  wall = time.perf_counter() - start

  out = OUTPUT.value or os.path.join(workdir, 'samples', 'sample')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.save(out + '.npy', tokens.astype(np.int16))
  with open(out + '.bin', 'wb') as f:
    f.write(b''.join(text.to_bytes(row) for row in tokens))
  with open(out + '.txt', 'w', encoding='utf-8') as f:
    f.write(text.render_samples(tokens))
  generated = sum(len(strip_padding(r)) for r in tokens) - num_samples * (
      len(prompt or b'') + len(suffix or b''))
  print(text.render_samples(tokens))
  print(f'checkpoint step {step} | sampler {options.sampler} | steps {stats["steps"]} | '
        f'network calls {stats["latent_calls"]} | wall {wall:.3f}s | '
        f'{generated / wall:.1f} bytes/s | written to {out}.{{txt,bin,npy}}')
  return tokens, stats

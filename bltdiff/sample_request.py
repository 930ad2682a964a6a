"""A sampling request: how many samples, how long, what prompt, what suffix to
infill up to, how far beyond the context, with which sampler options; checked
against a model's context, then drawn. The sampling command
(`bltdiff.generate`, names prefixed '--') and the Python API (`bltdiff.api`,
keyword names) both go through `make_request` and `draw`, so they accept the
same things, fail with the same one-line errors and draw the same bytes.

Prompting: the prompt's bytes stay visible at the start. Infilling: with a
suffix, the samples are prompt + gap + suffix and only the gap (default: the
rest of the context) is generated. total_length beyond the context generates
semi-autoregressively: blocks of sample.block_length bytes (default half the
context), each conditioned on the previous context.
"""

from typing import NamedTuple

import jax
import numpy as np

from bltdiff import vocab
from bltdiff.errors import ConfigError
from bltdiff.sampling.options import SamplerOptions


class SampleRequest(NamedTuple):
  num_samples: int
  length: int  # bytes per sample of one model call (prompt + gap + suffix with a gap)
  prompt: bytes | None
  suffix: bytes | None
  total_length: int | None  # None: one call; else semi-autoregressive blocks
  block_length: int  # bytes generated per block beyond the context
  options: SamplerOptions


def make_request(config, options: SamplerOptions, *, num_samples=None, length=None,
                 prompt: bytes | None = None, suffix: bytes | None = None, gap=None,
                 total_length=None, where: str = '--') -> SampleRequest:
  """A checked request; None takes the default (config.sample.num_samples,
  the context data.seq_len). Errors name the field as `{where}{name}`."""
  options.check(where=where)
  context = config.data.seq_len
  num_samples = config.sample.num_samples if num_samples is None else num_samples
  length = context if length is None else length
  if num_samples <= 0:
    raise ConfigError(f'{where}num_samples: must be positive, got {num_samples}')
  if length <= 0:
    raise ConfigError(f'{where}length: must be positive, got {length}')
  if length > context:
    raise ConfigError(f'{where}length: {length} exceeds the model context data.seq_len={context}')
  prompt, suffix = prompt or None, suffix or None  # empty means none
  if gap is not None:
    if gap <= 0:
      raise ConfigError(f'{where}gap: must be positive, got {gap}')
    length = len(prompt or b'') + gap + len(suffix or b'')
    if length > context:
      raise ConfigError(f'{where}gap: prompt + gap + suffix = {length} bytes exceed the context '
                        f'data.seq_len={context}')
  given = len(prompt or b'') + len(suffix or b'')
  if given >= length:
    raise ConfigError(f'{where}prompt: {given} given bytes (prompt + suffix) leave no room in a '
                      f'sample of {length} bytes; shorten them or raise {where}length/{where}gap')
  if total_length is not None:
    if suffix is not None:
      raise ConfigError(f'{where}total_length: semi-autoregressive generation takes no '
                        f'{where}suffix')
    if total_length <= length:
      raise ConfigError(f'{where}total_length: {total_length} must exceed the sample length '
                        f'{length} (blocks beyond the context); omit it otherwise')
  block = config.sample.block_length or context // 2
  if total_length is not None and not 0 < block < length:
    raise ConfigError(f'sample.block_length: {block} must be in (0, {length}) for '
                      f'{where}total_length beyond the context')
  return SampleRequest(num_samples, length, prompt, suffix, total_length, block, options)


def as_tokens(data: bytes | None):
  return None if data is None else np.frombuffer(data, np.uint8).astype(np.int32)


def strip_padding(row) -> np.ndarray:
  """A row's generated symbols: PAD marks where a shorter sample ended."""
  row = np.asarray(row)
  return row[row != vocab.PAD]


def numeric_stats(stats: dict) -> dict:
  return {k: v for k, v in stats.items() if isinstance(v, (int, float))}


def draw(model, params, request: SampleRequest, key):
  """(tokens int [num_samples, total_length or length], PAD after a row's
  bytes; stats) of one request."""
  n = request.num_samples

  def sample_fn(prefix, length, batched_prefix=False):
    if not batched_prefix:
      return model.sample(params, key, request.options, num_samples=n, length=length,
                          prefix=prefix, suffix=as_tokens(request.suffix))
    # Rows continue from different histories: one call per row, keys folded per row.
    rows = [model.sample(params, jax.random.fold_in(key, 1000 + i), request.options,
                         num_samples=1, length=length, prefix=row)
            for i, row in enumerate(prefix)]
    return np.concatenate([r[0] for r in rows]), {
        k: sum(numeric_stats(r[1])[k] for r in rows) / len(rows)
        for k in numeric_stats(rows[0][1])}

  prompt = as_tokens(request.prompt)
  if request.total_length is None:
    return sample_fn(prompt, request.length)
  return semi_autoregressive(sample_fn, prompt, request.total_length, request.length,
                             request.block_length)


def semi_autoregressive(sample_fn, prompt, total_length: int, context: int, block: int):
  """Samples of total_length bytes (> context) in blocks: each call of
  sample_fn(prefix, length) -> (tokens [num_samples, length], stats) keeps the
  last context − block bytes of a row visible and generates the rest of the
  context. Rows may come back shorter than asked (latent MDLM draws its patch
  count); each continues from its own history.
  Returns (tokens [num_samples, total_length] PAD-padded, summed stats)."""
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


def generated_bytes(tokens, request: SampleRequest) -> int:
  """Bytes the model generated (prompt and suffix not counted)."""
  given = len(request.prompt or b'') + len(request.suffix or b'')
  return sum(len(strip_padding(r)) for r in tokens) - len(tokens) * given

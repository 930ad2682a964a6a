"""Sample-quality and sampling-cost measures of the evaluation protocol.

- gen-bpb: bits per byte of samples under an evaluator byte AR model (exact NLL).
- unigram byte entropy (bits) and the fraction of repeated 8-grams: collapse
  detectors; a low gen-bpb with low entropy or many repeats is not quality.
"""

import math
import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import intervals, text, vocab
from bltdiff.models import byte_ar


def unigram_entropy_bits(samples: list[bytes]) -> float:
  """Entropy (bits) of the byte histogram pooled over all samples."""
  counts = np.bincount(np.frombuffer(b''.join(samples), np.uint8), minlength=256).astype(float)
  total = counts.sum()
  if total == 0:
    return 0.0
  p = counts[counts > 0] / total
  return float(-(p * np.log2(p)).sum())


def repeated_ngram_fraction(samples: list[bytes], n: int = 8) -> float:
  """Fraction of byte n-grams (within each sample) that occurred earlier in
  the same sample: 0 for text that never repeats itself, near 1 for loops."""
  repeats = total = 0
  for s in samples:
    grams = [s[i:i + n] for i in range(len(s) - n + 1)]
    total += len(grams)
    repeats += len(grams) - len(set(grams))
  return repeats / total if total else 0.0


def evaluator_nll(model: byte_ar.ByteARModel, params, sequences, seq_len: int,
                  batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """Per sequence: (NLL in nats [n], scored symbols [n]) of token sequences
  (ints in [0, NUM_DATA_SYMBOLS)) under an AR evaluator. Each sequence is
  scored on its own from a document start, in windows of seq_len symbols.
  Document-boundary symbols inside a sample are scored and counted like
  bytes, as in training; the same holds for the data's own rows."""
  rows = []  # (sequence index, window)
  for index, seq in enumerate(sequences):
    toks = np.asarray(seq, np.int32)
    for start in range(0, len(toks), seq_len):
      rows.append((index, toks[start:start + seq_len]))
  nll = np.zeros(len(sequences), np.float64)
  symbols = np.zeros(len(sequences), np.int64)
  score = _scorer(model)
  for i in range(0, len(rows), batch_size):
    group = rows[i:i + batch_size]
    tokens = np.full((batch_size, seq_len), vocab.BOUNDARY, np.int32)
    valid = np.zeros((batch_size, seq_len), bool)
    for r, (_, row) in enumerate(group):
      tokens[r, :len(row)] = row
      valid[r, :len(row)] = True
    row_nll = np.where(valid, np.asarray(score(params, jnp.asarray(tokens))), 0.0).sum(-1)
    for r, (index, row) in enumerate(group):
      nll[index] += row_nll[r]
      symbols[index] += len(row)
  return nll, symbols


def evaluator_bpb(model: byte_ar.ByteARModel, params, sequences, seq_len: int,
                  batch_size: int = 16) -> float:
  """Bits per byte of all the sequences together under the evaluator (their
  summed NLL over their summed length; see `evaluator_nll`)."""
  nll, symbols = evaluator_nll(model, params, sequences, seq_len, batch_size)
  return float(nll.sum() / max(symbols.sum(), 1) / math.log(2.0))


def bootstrap_interval(nll, symbols, num_resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of the ratio sum(nll) / sum(symbols) / ln 2
  (bits per byte), resampling whole samples with replacement (seeded;
  `bltdiff.intervals.ratio_interval`)."""
  bits = np.asarray(nll, np.float64) / math.log(2.0)
  interval = intervals.ratio_interval(bits, symbols, resamples=num_resamples, seed=seed,
                                      level=level)
  return interval['lo'], interval['hi']


def quality_row(samples, evaluator, evaluator_params, seq_len: int) -> dict:
  """Quality figures of samples: a list of token arrays [n_i] (bytes and BOUNDARY;
  PAD, which marks where a shorter sample ended, is dropped first). gen_bpb is
  the evaluator's bits per byte over all samples, gen_bpb_ci its 95% bootstrap
  interval over samples."""
  samples = [np.asarray(s)[np.asarray(s) < vocab.NUM_DATA_SYMBOLS] for s in samples]
  as_bytes = [text.to_bytes(s) for s in samples]
  nll, symbols = evaluator_nll(evaluator, evaluator_params, samples, seq_len)
  return {
      'gen_bpb': float(nll.sum() / max(symbols.sum(), 1) / math.log(2.0)),
      'gen_bpb_ci': list(bootstrap_interval(nll, symbols)),
      'unigram_entropy': unigram_entropy_bits(as_bytes),
      'repeat_8gram': repeated_ngram_fraction(as_bytes, 8),
      'sample_bytes': float(np.mean([len(s) for s in samples])) if samples else 0.0,
  }


_SCORERS = {}


def _scorer(model):
  if id(model) not in _SCORERS:
    _SCORERS[id(model)] = jax.jit(
        lambda params, tokens: byte_ar.sequence_nll(model.logits(params, tokens), tokens))
  return _SCORERS[id(model)]

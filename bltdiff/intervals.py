"""95% intervals over examples: the percentile bootstrap, paired for comparisons.

A figure of a set of n examples is a ratio of sums, Σ num / Σ den: a mean
when den = 1 (ROUGE-L), bits per byte when num = bits and den = bytes
(gen-bpb). Its interval: draw R resamples of n example indices with
replacement (R × n indices, fixed seed), recompute the figure on each,
take the (1 − level)/2 and (1 + level)/2 quantiles of the R values.

A comparison of two systems on the same examples resamples the same indices
for both (paired), so the interval of the difference A − B keeps what the
examples share (a hard source is hard for both) out of the noise. The
bootstrap rather than a t-interval: gen-bpb is a ratio, and per-example
ROUGE is bounded and skewed on short texts.
"""

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
  """int [resamples, n]: example indices drawn with replacement."""
  if n <= 0:
    raise ValueError('no examples to resample')
  return np.random.default_rng(seed).integers(0, n, (resamples, n))


def ratio(num, den, indices=None):
  """Σ num / Σ den over all examples (float) or over each resample ([R])."""
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  if indices is None:
    return float(num.sum() / max(den.sum(), 1e-12))
  return num[indices].sum(-1) / np.maximum(den[indices].sum(-1), 1e-12)


def _interval(value: float, draws, level: float) -> dict:
  lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
  return {'value': value, 'lo': float(lo), 'hi': float(hi)}


def ratio_interval(num, den=None, *, resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> dict:
  """{'value', 'lo', 'hi'}: Σ num / Σ den (den = 1: the mean) with its interval."""
  den = np.ones(len(num)) if den is None else den
  idx = resample_indices(len(num), resamples, seed)
  return _interval(ratio(num, den), ratio(num, den, idx), level)


def difference_interval(num_a, den_a, num_b, den_b, *, resamples: int = RESAMPLES,
                        seed: int = 0, level: float = LEVEL) -> dict:
  """{'value', 'lo', 'hi'}: ratio(A) − ratio(B) on paired examples (example
  i of A and of B share a source); den_* None = means."""
  n = len(num_a)
  if len(num_b) != n:
    raise ValueError(f'paired comparison needs the same examples: {n} vs {len(num_b)}')
  den_a = np.ones(n) if den_a is None else den_a
  den_b = np.ones(n) if den_b is None else den_b
  idx = resample_indices(n, resamples, seed)
  return _interval(ratio(num_a, den_a) - ratio(num_b, den_b),
                   ratio(num_a, den_a, idx) - ratio(num_b, den_b, idx), level)

"""Training on a share of a split: an evenly spread subset of its records.

`data.train_fraction` < 1 trains on fewer documents (or pairs) of the same
prepared data, against the same validation split: the data axis of a scaling
experiment (bench/scaling.py's data_half), with nothing re-prepared.
"""

import grain
import numpy as np


def split_fraction(data_config, split: str) -> float:
  """The share of `split` a run reads: data_config.train_fraction for the
  train split (1.0 in configs saved before the field existed), all of any
  other split."""
  return float(data_config.get('train_fraction', 1.0)) if split == 'train' else 1.0


def spread_subset(count: int, fraction: float) -> np.ndarray:
  """Indices of round(count x fraction) of count records (at least one),
  evenly spread: record floor(k x count / keep) for k = 0 .. keep − 1.

  A prepared split lists its records source by source, so a prefix would drop
  whole books; a spread subset keeps every source's share. fraction in (0, 1]."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'fraction must be in (0, 1], got {fraction}')
  keep = max(1, round(count * fraction))
  return np.floor(np.arange(keep) * (count / keep)).astype(np.int64)


class SubsetSource(grain.sources.RandomAccessDataSource):
  """Records `indices` of a random-access source, as a source (picklable when
  the source is, so grain's worker processes can take it)."""

  def __init__(self, source, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int):
    return self._source[int(self._indices[index])]

  def __repr__(self) -> str:
    return f'SubsetSource({len(self)} of {self._source!r})'


def subset_dataset(source, fraction: float) -> grain.MapDataset:
  """A MapDataset over `source` (random access), or over `spread_subset`'s
  records of it when fraction < 1."""
  if fraction < 1.0:
    source = SubsetSource(source, spread_subset(len(source), fraction))
  return grain.MapDataset.source(source)

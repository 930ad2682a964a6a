"""A seeded global shuffle with a fresh permutation per epoch, in O(1) per element.

grain's `MapDataset.shuffle` computes every index with a cryptographic-style
index shuffle, ~0.7 ms per element on this machine — the whole pipeline's cost
when documents are small. Here each epoch's permutation is drawn once with
numpy (8 M documents: ~0.1 s, 64 MB) and looked up per element.

Index i of this dataset (i may exceed len, as after `.repeat`) is element
perm_e[i mod n] of the parent, e = i // n, perm_e = permutation of
np.random.default_rng([seed, e]): deterministic given (seed, epoch).
"""

import threading

import grain
import numpy as np


class EpochShuffleMapDataset(grain.MapDataset):

  def __init__(self, parent: grain.MapDataset, *, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._n = len(parent)
    self._init_cache()

  def _init_cache(self) -> None:
    self._lock = threading.Lock()
    self._perms: dict[int, np.ndarray] = {}  # the last two epochs (prefetch straddles them)

  def __getstate__(self):  # picklable for worker processes: no lock, no cache
    state = self.__dict__.copy()
    del state['_lock'], state['_perms']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_cache()

  def __len__(self) -> int:
    return self._n

  def permutation(self, epoch: int) -> np.ndarray:
    """int64 [n]: the order of epoch `epoch`."""
    with self._lock:
      perm = self._perms.get(epoch)
      if perm is None:
        perm = np.random.default_rng([self._seed, epoch]).permutation(self._n)
        self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
        self._perms[epoch] = perm
      return perm

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, pos = divmod(int(index), self._n)
    return self._parent[int(self.permutation(epoch)[pos])]

  def __str__(self) -> str:
    return f'EpochShuffleMapDataset(seed={self._seed})'

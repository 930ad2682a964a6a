"""Packs a stream of documents into fixed-shape batches, with exact resume.

Boundary handling ("wrap", as MDLM does for OpenWebText): documents are laid
end to end, each followed by one `vocab.BOUNDARY` symbol, and the stream is cut
every `seq_len` symbols regardless of document ends — a document may start in
one sequence and continue in the next (or the next batch). Nothing is padded or
dropped inside the stream, so every position carries a training signal. A
finite stream's last partial batch is dropped (static shapes).

The iterator's state is {"parent": <parent state before the current document>,
"offset": <symbols of the current document already emitted>}: restoring it
re-reads that one document and skips `offset` symbols, so a resumed run
continues exactly where the saved one stopped. The state is plain JSON (it is
what grain's orbax handler writes), as long as the parent's is.
"""

import copy
from typing import Any

import grain
import numpy as np

from bltdiff import vocab

# Entropy at a BOUNDARY position: far above any patching threshold, so a patch
# always starts at the document separator.
BOUNDARY_ENTROPY = 1e4


class PackedBatchIterDataset(grain.IterDataset):
  """Parent elements: {'tokens': uint8 [n]} (+ 'entropies': float [n]) per document.

  Yields {'tokens': int32 [batch_size, seq_len]} (+ 'entropies': float32, same
  shape), values in [0, vocab.NUM_DATA_SYMBOLS).
  """

  def __init__(self, parent: grain.IterDataset, *, batch_size: int, seq_len: int, with_entropies: bool):
    super().__init__(parent)
    self.batch_size, self.seq_len, self.with_entropies = batch_size, seq_len, with_entropies

  def __iter__(self) -> grain.DatasetIterator:
    return _PackedBatchIterator(self._parent.__iter__(), self.batch_size, self.seq_len, self.with_entropies)

  def __str__(self) -> str:
    return f'PackedBatchIterDataset(batch_size={self.batch_size}, seq_len={self.seq_len})'


class _PackedBatchIterator(grain.DatasetIterator):

  def __init__(self, parent: grain.DatasetIterator, batch_size: int, seq_len: int, with_entropies: bool):
    super().__init__(parent)
    self._shape = (batch_size, seq_len)
    self._with_entropies = with_entropies
    self._doc: np.ndarray | None = None  # current document (without its BOUNDARY)
    self._ent: np.ndarray | None = None
    self._offset = 0  # symbols of doc + BOUNDARY emitted; len(doc)+1 = consumed
    self._doc_state: Any = None  # parent state just before the current document

  def _next_document(self) -> None:
    state = self._parent.get_state()
    element = next(self._parent)  # StopIteration ends the stream
    self._doc_state = state
    self._doc = element['tokens']
    self._ent = element.get('entropies') if self._with_entropies else None
    self._offset = 0

  def __next__(self) -> dict[str, np.ndarray]:
    total = self._shape[0] * self._shape[1]
    tokens = np.empty(total, np.int32)
    ents = np.empty(total, np.float32) if self._with_entropies else None
    pos = 0
    while pos < total:
      if self._doc is None or self._offset > len(self._doc):
        self._next_document()
      n = len(self._doc)
      if self._offset < n:  # copy as much of the document as fits
        take = min(n - self._offset, total - pos)
        tokens[pos:pos + take] = self._doc[self._offset:self._offset + take]
        if ents is not None:
          ents[pos:pos + take] = self._ent[self._offset:self._offset + take]
        pos += take
        self._offset += take
      else:  # the document is done: its separator
        tokens[pos] = vocab.BOUNDARY
        if ents is not None:
          ents[pos] = BOUNDARY_ENTROPY
        pos += 1
        self._offset += 1
    batch = {'tokens': tokens.reshape(self._shape)}
    if ents is not None:
      batch['entropies'] = ents.reshape(self._shape)
    return batch

  def get_state(self) -> dict[str, Any]:
    if self._doc is None:
      return {'parent': copy.deepcopy(self._parent.get_state()), 'offset': 0}
    return {'parent': copy.deepcopy(self._doc_state), 'offset': self._offset}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state['parent'])
    self._doc = self._ent = None
    if state['offset']:  # re-read the interrupted document, skip what was emitted
      self._next_document()
      self._offset = state['offset']

  def __str__(self) -> str:
    return f'PackedBatchIterator(shape={self._shape})'

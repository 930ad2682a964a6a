"""Turning token arrays back into bytes and readable text."""

import numpy as np

from bltdiff import vocab

DOC_SEPARATOR = '\n<|doc|>\n'  # how a BOUNDARY symbol is shown in renderings


def to_bytes(tokens) -> bytes:
  """int [n] in [0, NUM_DATA_SYMBOLS) -> raw bytes; BOUNDARY symbols are dropped
  (use `documents` to keep the split)."""
  tokens = np.asarray(tokens)
  return bytes(tokens[tokens < vocab.NUM_BYTES].astype(np.uint8).tolist())


def documents(tokens) -> list[bytes]:
  """int [n] -> the byte strings between BOUNDARY symbols."""
  out, current = [], []
  for t in np.asarray(tokens).tolist():
    if t == vocab.BOUNDARY:
      out.append(bytes(current))
      current = []
    elif t < vocab.NUM_BYTES:
      current.append(t)
  out.append(bytes(current))
  return out


def render(tokens) -> str:
  """Readable text of one sequence: invalid UTF-8 shown as U+FFFD (the raw
  bytes stay in the .npy/.bin outputs), document boundaries as DOC_SEPARATOR."""
  return DOC_SEPARATOR.join(d.decode('utf-8', errors='replace') for d in documents(tokens))


def render_samples(batch) -> str:
  parts = [f'=== sample {i} ===\n{render(row)}\n' for i, row in enumerate(np.asarray(batch))]
  return '\n'.join(parts)

r"""Writes text as ArrayRecord shards of raw document bytes (+ optional entropies).

The command is `data_prep.prepare`:
  python -m data_prep.prepare --source=builtin --out=/tmp/data
  python -m data_prep.prepare --source=text --paths='books/*.txt,more/' --out=DIR
  python -m data_prep.prepare --source=openwebtext --out=DIR          # HF hub
  python -m data_prep.prepare --source=openwebtext --data_files=x.parquet --out=DIR
  python -m data_prep.prepare --source=text8 --paths=text8.zip --out=DIR
  python -m data_prep.prepare ... --entropy_model=WORKDIR   # store per-byte entropies

Layout and manifest: see `data_prep.manifest`. Documents: see `data_prep.sources`.

Split: document i of the stream (0-based) goes to validation iff
floor((i+1)·f) > floor(i·f), f = validation_fraction: exactly floor(n·f)
validation documents spread evenly through the stream (every 1/f-th), which is
deterministic, needs no total count up front, and still gives a held-out set
when there are only a few dozen documents.

Shards: documents of a split accumulate until `shard_bytes`; then the shard is
written to `NAME.tmp-PID` and renamed (an interrupted run leaves no half shard
under a real name), and a `.done.json` marker is written last. A rerun rebuilds
the same shards from the deterministic stream and skips every shard whose
marker exists and matches (checksum), so the expensive part — writing and the
entropy model — is not redone. A document larger than a shard is one record
of its own shard.
"""

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from absl import logging

from data_prep import manifest as mf
from data_prep import sources
from data_prep.errors import DataError

EntropyFn = Callable[[list[bytes]], list[np.ndarray]]

DEFAULT_SHARD_BYTES = 16 << 20
ENTROPY_BATCH_BYTES = 1 << 20  # documents per entropy_fn call, by total bytes


def is_validation(index: int, fraction: float) -> bool:
  """The split rule of the module docstring."""
  return int((index + 1) * fraction) > int(index * fraction)


def _write_records(path: Path, records: Sequence[bytes]) -> None:
  """Writes one ArrayRecord file atomically (temporary name, then rename)."""
  from array_record.python.array_record_module import ArrayRecordWriter
  tmp = path.with_name(f'{path.name}.tmp-{os.getpid()}')
  # group_size:1 makes every record its own chunk: cheap random access by index.
  writer = ArrayRecordWriter(str(tmp), 'group_size:1')
  try:
    for r in records:
      writer.write(r)
  finally:
    writer.close()
  os.replace(tmp, path)


def _entropy_records(docs: list[bytes], entropy_fn: EntropyFn) -> list[bytes]:
  """float16 bytes of entropy_fn(docs), checked to be one value per byte."""
  out: list[bytes] = []
  batch: list[bytes] = []

  def flush():
    ents = entropy_fn(list(batch))
    if len(ents) != len(batch):
      raise DataError(f'entropy model returned {len(ents)} arrays for {len(batch)} documents')
    for doc, e in zip(batch, ents):
      e = np.asarray(e)
      if e.shape != (len(doc),):
        raise DataError(f'entropy model returned shape {e.shape} for a document of {len(doc)} bytes')
      out.append(e.astype(np.float16).tobytes())
    batch.clear()

  size = 0
  for doc in docs:
    batch.append(doc)
    size += len(doc)
    if size >= ENTROPY_BATCH_BYTES:
      flush()
      size = 0
  if batch:
    flush()
  return out


def _digest(docs: Sequence[bytes]) -> str:
  h = hashlib.sha256()
  for d in docs:
    h.update(len(d).to_bytes(8, 'little'))
    h.update(d)
  return h.hexdigest()


class _Progress:
  """Logs documents, bytes, MB/s and ETA at most every `every_s` seconds."""

  def __init__(self, total_bytes: int | None, every_s: float):
    self.total, self.every_s = total_bytes, every_s
    self.start = self.last = time.monotonic()
    self.docs = self.bytes = 0

  def add(self, nbytes: int, force: bool = False) -> None:
    self.docs += 1
    self.bytes += nbytes
    now = time.monotonic()
    if force or now - self.last >= self.every_s:
      self.last = now
      self.log()

  def log(self) -> None:
    dt = max(time.monotonic() - self.start, 1e-9)
    rate = self.bytes / dt
    eta = f'{max(self.total - self.bytes, 0) / rate:.0f}s' if self.total and rate > 0 else '?'
    logging.info('prepare: %d docs, %.1f MB, %.2f MB/s, ETA %s', self.docs, self.bytes / 1e6, rate / 1e6, eta)


class _SplitWriter:
  """Accumulates one split's documents into shards; writes or skips each full shard."""

  def __init__(self, out: Path, split: str, shard_bytes: int, entropy_fn: EntropyFn | None):
    self.out, self.split, self.shard_bytes, self.entropy_fn = out, split, shard_bytes, entropy_fn
    self.docs: list[bytes] = []
    self.size = 0
    self.shards: list[dict] = []
    self.written = self.skipped = 0

  def add(self, doc: bytes) -> None:
    self.docs.append(doc)
    self.size += len(doc)
    if self.size >= self.shard_bytes:
      self.flush()

  def flush(self) -> None:
    if not self.docs:  # no empty shards: an empty split has an empty shard list
      return
    i = len(self.shards)
    info = {'file': mf.shard_name(self.split, i),
            'entropy_file': mf.entropy_shard_name(self.split, i) if self.entropy_fn else None,
            'documents': len(self.docs), 'bytes': self.size, 'sha256': _digest(self.docs)}
    done = self.out / mf.done_name(self.split, i)
    if done.exists():
      if mf.read_json(done) != info:
        raise DataError(f'{done}: shard differs from this run (other input or parameters?); prepare into an empty --out')
      self.skipped += 1
    else:
      if self.entropy_fn:  # entropies first: the byte shard + marker mean "all of it is there"
        _write_records(self.out / info['entropy_file'], _entropy_records(self.docs, self.entropy_fn))
      _write_records(self.out / info['file'], self.docs)
      mf.write_json_atomic(done, info)
      self.written += 1
    self.shards.append(info)
    self.docs, self.size = [], 0

  def summary(self) -> dict:
    return {'documents': sum(s['documents'] for s in self.shards),
            'bytes': sum(s['bytes'] for s in self.shards), 'shards': self.shards}


def documents(source: str, *, paths: str | Sequence[str] = (), data_files: str | Sequence[str] = (),
              builtin_max_bytes: int = sources.DEFAULT_BUILTIN_MAX_BYTES,
              doc_bytes: int = sources.DEFAULT_DOC_BYTES, source_split: str = 'train',
              tfds_data_dir: str | None = None) -> tuple[Iterator[bytes], int | None]:
  """The document stream of `source` after the splitting rule, and its total size if known."""
  data_files = sources._comma_list(data_files) or sources._comma_list(paths)
  if source == 'text':
    docs, total = sources.text_documents(paths)
  elif source == 'builtin':
    docs, total = sources.builtin_documents(builtin_max_bytes)
  elif source == 'openwebtext':
    docs, total = sources.openwebtext_documents(data_files, source_split), None
  elif source == 'wikitext103':
    docs, total = sources.wikitext103_documents(data_files, source_split), None
  elif source == 'lm1b':
    docs, total = sources.lm1b_documents(tfds_data_dir, source_split), None
  elif source == 'text8':
    if len(data_files) != 1:
      raise DataError('text8 needs exactly one zip: --paths=text8.zip')
    blocks, total = sources.text8_documents(data_files[0])
    return sources.rechunk_stream(blocks, doc_bytes, b' '), total
  else:
    raise DataError(f'unknown source {source!r}; choose one of {", ".join(sources.SOURCES)}')
  return sources.split_documents(docs, doc_bytes), total


def prepare(source: str, out_dir: str | os.PathLike, *, paths: str | Sequence[str] = (),
            data_files: str | Sequence[str] = (), validation_fraction: float = 0.05,
            shard_bytes: int = DEFAULT_SHARD_BYTES, doc_bytes: int = sources.DEFAULT_DOC_BYTES,
            builtin_max_bytes: int = sources.DEFAULT_BUILTIN_MAX_BYTES, source_split: str = 'train',
            tfds_data_dir: str | None = None, entropy_fn: EntropyFn | None = None,
            log_every_s: float = 10.0) -> dict:
  """Prepares `source` into `out_dir` (resuming a partial run); returns the manifest.

  entropy_fn: list of documents -> list of float arrays [len(doc)] (nats);
    stored as float16 in `*.entropy.arrayrecord` beside the byte shards.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise DataError(f'validation_fraction must be in [0, 1), got {validation_fraction}')
  if shard_bytes <= 0:
    raise DataError(f'shard_bytes must be positive, got {shard_bytes}')
  out = Path(out_dir)
  params = {'source': source, 'paths': sources._comma_list(paths), 'data_files': sources._comma_list(data_files),
            'validation_fraction': validation_fraction, 'shard_bytes': shard_bytes, 'doc_bytes': doc_bytes,
            'source_split': source_split, 'has_entropies': entropy_fn is not None}
  if source == 'builtin':
    params.update(builtin_max_bytes=builtin_max_bytes, python=sys.version.split()[0])
  # Opening the stream first checks the input paths before anything is created.
  docs, total = documents(source, paths=paths, data_files=data_files, builtin_max_bytes=builtin_max_bytes,
                          doc_bytes=doc_bytes, source_split=source_split, tfds_data_dir=tfds_data_dir)
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise DataError(f'{out}: cannot create output directory ({e.strerror})') from None
  if (out / mf.MANIFEST).exists():
    manifest = mf.read_manifest(out)
    if manifest.get('params') == params:
      logging.info('prepare: %s is already complete', out)
      return manifest
    raise DataError(f'{out}: already holds data prepared with other parameters; use another --out')
  if (out / mf.PARAMS).exists() and mf.read_json(out / mf.PARAMS) != params:
    raise DataError(f'{out}: holds a partial run with other parameters; use another --out or delete it')
  mf.write_json_atomic(out / mf.PARAMS, params)
  for stale in out.glob('*.tmp-*'):  # half-written files of a killed run (one writer per --out)
    stale.unlink()
  writers = {s: _SplitWriter(out, s, shard_bytes, entropy_fn) for s in mf.SPLITS}
  progress = _Progress(total, log_every_s)
  for i, doc in enumerate(docs):
    writers['validation' if is_validation(i, validation_fraction) else 'train'].add(doc)
    progress.add(len(doc))
  for w in writers.values():
    w.flush()
  progress.log()
  logging.info('prepare: shards written %d, skipped (already done) %d',
               sum(w.written for w in writers.values()), sum(w.skipped for w in writers.values()))
  manifest = {'format_version': mf.FORMAT_VERSION, 'source': source, 'params': params,
              'has_entropies': entropy_fn is not None, 'entropy_dtype': 'float16',
              'splits': {s: w.summary() for s, w in writers.items()}}
  mf.write_json_atomic(out / mf.MANIFEST, manifest)
  return manifest

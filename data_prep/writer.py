r"""Writes ArrayRecord shards: documents (text) or (source, target) pairs.
The command is `python -m data_prep.prepare` (data_prep/prepare.py).

Layout and manifest: see `data_prep.manifest`. Documents: see
`data_prep.sources`; pairs: see `data_prep.pair_sources`. With
data_format='pairs', a pair dataset (cnn_dailymail, xsum, writingprompts)
gives its pairs, and any text source gives passage -> next passage pairs of
its documents (after the documents' own splitting rule).

Split: unit i of the stream (0-based) goes to validation iff
floor((i+1)·f) > floor(i·f), f = validation_fraction: exactly floor(n·f)
validation units spread evenly through the stream (every 1/f-th), which is
deterministic, needs no total count up front, and still gives a held-out set
when there are only a few dozen units. A unit is a document (text), a pair (a
pair dataset), or all passage pairs of one document (passages: a document's
pairs share their text, so they are never split apart, and the same
documents are held out as in a text preparation with the same parameters).
f = 1 puts everything in validation: an evaluation-only directory, e.g. of a
dataset's own test split (--source_split=test).

Shards: records of a split accumulate until `shard_bytes`; then the shard is
written to `NAME.tmp-PID` and renamed (an interrupted run leaves no half shard
under a real name; gs:// shards: see `data_prep.shard_files`), and a
`.done.json` marker is written last. A rerun rebuilds
the same shards from the deterministic stream and skips every shard whose
marker exists and matches (checksum), so the expensive part — writing and the
entropy model — is not redone. A record larger than a shard is one record
of its own shard.

Processes: several processes (hosts of a multi-host job) prepare one
directory together, each writing every process_count-th shard, entropies
included, so the entropy model's work is split; the manifest is written once
all shards are there (`prepare`'s docstring).
"""

import hashlib
import os
import sys
from typing import Callable, Sequence

from absl import logging
from etils import epath

from data_prep import manifest as mf
from data_prep import pair_sources
from data_prep import sources, streams
from data_prep.shard_files import is_local, write_records
from data_prep.entropy_records import EntropyFn, entropy_records, pair_entropy_records
from data_prep.errors import DataError
from data_prep.progress import Progress

Pair = pair_sources.Pair
_write_records = write_records  # one name to replace in tests (a killed write)

DEFAULT_SHARD_BYTES = 16 << 20


def is_validation(index: int, fraction: float) -> bool:
  """The split rule of the module docstring."""
  return int((index + 1) * fraction) > int(index * fraction)


def _digest(docs: Sequence[bytes]) -> str:
  h = hashlib.sha256()
  for d in docs:
    h.update(len(d).to_bytes(8, 'little'))
    h.update(d)
  return h.hexdigest()


class _Turns:
  """Which process writes which shard: the k-th shard closed (both splits, in
  stream order, k = 0, 1, ...) is written by process k mod process_count."""

  def __init__(self, process_index: int, process_count: int):
    self.index, self.count, self.next = process_index, process_count, 0

  def mine(self) -> bool:
    k, self.next = self.next, self.next + 1
    return k % self.count == self.index


class _SplitWriter:
  """Accumulates one split's records into shards; writes or skips each full
  shard of this process (`_Turns`); the shards of other processes are only
  counted here, and their checksums read from their completion markers.

  A record is a document, or an encoded pair (`manifest.encode_pair`); the
  shard counts them under `count_key` ('documents' / 'pairs').
  """

  def __init__(self, out: epath.Path, split: str, shard_bytes: int, entropy_fn: EntropyFn | None,
               count_key: str = 'documents', turns: _Turns | None = None):
    self.out, self.split, self.shard_bytes, self.entropy_fn = out, split, shard_bytes, entropy_fn
    self.count_key = count_key
    self.turns = turns or _Turns(0, 1)
    self.records: list[bytes] = []
    self.size = 0
    self.shards: list[dict] = []
    self.others: list[int] = []  # indices of the shards other processes write
    self.written = self.skipped = 0

  def add(self, record: bytes) -> None:
    self.records.append(record)
    self.size += len(record)
    if self.size >= self.shard_bytes:
      self.flush()

  def flush(self) -> None:
    if not self.records:  # no empty shards: an empty split has an empty shard list
      return
    i = len(self.shards)
    info = {'file': mf.shard_name(self.split, i),
            'entropy_file': mf.entropy_shard_name(self.split, i) if self.entropy_fn else None,
            self.count_key: len(self.records), 'bytes': self.size}
    if self.turns.mine():
      self._write_or_skip(i, info)
    else:
      self.others.append(i)
    self.shards.append(info)
    self.records, self.size = [], 0

  def _write_or_skip(self, i: int, info: dict) -> None:
    info['sha256'] = _digest(self.records)
    done = self.out / mf.done_name(self.split, i)
    if done.exists():
      if mf.read_json(done) != info:
        raise DataError(f'{done}: shard differs from this run (other input or parameters?); prepare into an empty --out')
      self.skipped += 1
      return
    # Half-written files of this shard from a killed run (only this process writes them).
    for stale in self.out.glob(f'{self.split}-{i:05d}.*.tmp-*'):
      stale.unlink()
    if self.entropy_fn:  # entropies first: the byte shard + marker mean "all of it is there"
      scorer = pair_entropy_records if self.count_key == 'pairs' else entropy_records
      _write_records(self.out / info['entropy_file'], scorer(self.records, self.entropy_fn))
    _write_records(self.out / info['file'], self.records)
    mf.write_json_atomic(done, info)
    self.written += 1

  def collect_others(self) -> int:
    """Completes the infos of other processes' shards from their markers;
    returns how many markers are still missing."""
    missing = []
    for i in self.others:
      done = self.out / mf.done_name(self.split, i)
      if not done.exists():
        missing.append(i)
        continue
      marker = mf.read_json(done)
      if {k: marker.get(k) for k in self.shards[i]} != self.shards[i]:
        raise DataError(f'{done}: shard differs from this run (other input or parameters?); prepare into an empty --out')
      self.shards[i] = marker
    self.others = missing
    return len(missing)

  def summary(self) -> dict:
    return {self.count_key: sum(s[self.count_key] for s in self.shards),
            'bytes': sum(s['bytes'] for s in self.shards), 'shards': self.shards}


def _check_split_sizes(writers: dict, validation_fraction: float, data_format: str) -> None:
  """A split the fraction asks for must hold something: an empty train or
  validation split fails far from its cause (no batch to train or evaluate on).
  Raised before the manifest is written, so the directory stays incomplete."""
  sizes = {s: w.summary() for s, w in writers.items()}
  noun = mf.count_key(data_format)
  wanted = [s for s, asked in (('train', validation_fraction < 1), ('validation', validation_fraction > 0))
            if asked and sizes[s]['bytes'] == 0]
  if wanted:
    counts = ', '.join(f'{s}: {sizes[s][noun]} {noun} ({sizes[s]["bytes"]} bytes)' for s in sizes)
    raise DataError(f'the {" and ".join(wanted)} split{"s are" if len(wanted) > 1 else " is"} empty '
                    f'({counts}; validation_fraction={validation_fraction}): give more input or '
                    f'change --validation_fraction')


def prepare(source: str, out_dir: epath.PathLike, *, data_format: str = 'text', paths: str | Sequence[str] = (),
            data_files: str | Sequence[str] = (), validation_fraction: float = 0.05,
            shard_bytes: int = DEFAULT_SHARD_BYTES, doc_bytes: int = sources.DEFAULT_DOC_BYTES,
            builtin_max_bytes: int = sources.DEFAULT_BUILTIN_MAX_BYTES, source_split: str = 'train',
            passage_bytes: int = pair_sources.DEFAULT_PASSAGE_BYTES,
            tfds_data_dir: str | None = None, entropy_fn: EntropyFn | None = None,
            log_every_s: float = 10.0, process_index: int = 0, process_count: int = 1,
            barrier: Callable[[str], None] | None = None) -> dict | None:
  """Prepares `source` into `out_dir` (local or gs://; resuming a partial run);
  returns the manifest.

  data_format: 'text' (one record = one document) or 'pairs' (one record =
    one (source, target) pair; see `data_prep.manifest`).
  passage_bytes: passage size of passage -> next passage pairs (pairs of a
    text source only).
  entropy_fn: list of documents -> list of float arrays [len(doc)] (nats);
    stored as float16 in `*.entropy.arrayrecord` beside the byte shards (for
    pairs: the source's then the target's, each scored as its own document).
  process_index, process_count: several processes prepare one directory
    together: each reads the whole (deterministic) stream and writes the
    shards `_Turns` gives it (entropies included). barrier(name), if given,
    waits for all processes (a multi-host JAX job): after the shards, process 0
    writes the manifest, then all return it. Without a barrier the manifest is
    written by whichever process finds every shard's marker present when its
    own are done (the last to finish); the others return None.
  """
  if data_format not in mf.FORMATS:
    raise DataError(f'unknown format {data_format!r}; choose one of {", ".join(mf.FORMATS)}')
  if not 0.0 <= validation_fraction <= 1.0:
    raise DataError(f'validation_fraction must be in [0, 1], got {validation_fraction}')
  if shard_bytes <= 0:
    raise DataError(f'shard_bytes must be positive, got {shard_bytes}')
  if not 0 <= process_index < process_count:
    raise DataError(f'process_index {process_index} not in [0, process_count={process_count})')
  pairs = data_format == 'pairs'
  out = epath.Path(out_dir)
  params = {'source': source, 'paths': sources.comma_list(paths), 'data_files': sources.comma_list(data_files),
            'validation_fraction': validation_fraction, 'shard_bytes': shard_bytes, 'doc_bytes': doc_bytes,
            'source_split': source_split, 'has_entropies': entropy_fn is not None}
  if source == 'builtin':
    params.update(builtin_max_bytes=builtin_max_bytes, python=sys.version.split()[0])
  if pairs:  # text params stay as they were: directories prepared before still match
    params.update(format='pairs', passage_bytes=passage_bytes if source in sources.SOURCES else None)
  # Opening the stream first checks the input paths before anything is created.
  stream_kwargs = dict(paths=paths, data_files=data_files, builtin_max_bytes=builtin_max_bytes,
                       doc_bytes=doc_bytes, source_split=source_split, tfds_data_dir=tfds_data_dir)
  if pairs:
    groups, total = streams.pair_units(source, passage_bytes=passage_bytes, **stream_kwargs)
    units = ([mf.encode_pair(s, t) for s, t in group] for group in groups)
  else:
    docs, total = streams.documents(source, **stream_kwargs)
    units = ([doc] for doc in docs)  # one document = one record = one split unit
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise DataError(f'{out}: cannot create output directory ({e.strerror or e})') from None
  if is_local(out) and not os.access(out, os.W_OK):
    raise DataError(f'{out}: output directory is not writable')
  if (out / mf.MANIFEST).exists():
    if mf.read_json(out / mf.MANIFEST).get('params') == params:
      logging.info('prepare: %s is already complete', out)
      return mf.read_manifest(out, data_format)
    raise DataError(f'{out}: already holds data prepared with other parameters; use another --out')
  if (out / mf.PARAMS).exists() and mf.read_json(out / mf.PARAMS) != params:
    raise DataError(f'{out}: holds a partial run with other parameters; use another --out or delete it')
  if process_index == 0:
    mf.write_json_atomic(out / mf.PARAMS, params)
  turns = _Turns(process_index, process_count)
  writers = {s: _SplitWriter(out, s, shard_bytes, entropy_fn, mf.count_key(data_format), turns) for s in mf.SPLITS}
  progress = Progress(total, log_every_s, 'docs' if not pairs or source in sources.SOURCES else 'pairs')
  for i, records in enumerate(units):
    writer = writers['validation' if is_validation(i, validation_fraction) else 'train']
    for record in records:
      writer.add(record)
    progress.add(sum(map(len, records)))
  for w in writers.values():
    w.flush()
  progress.log()
  _check_split_sizes(writers, validation_fraction, data_format)
  logging.info('prepare: shards written %d, skipped (already done) %d, left to other processes %d',
               sum(w.written for w in writers.values()), sum(w.skipped for w in writers.values()),
               sum(len(w.others) for w in writers.values()))
  if barrier is not None:
    barrier('data_prep:shards_written')
  if process_index != 0 and barrier is not None:
    barrier('data_prep:manifest_written')
    return mf.read_manifest(out, data_format)
  missing = sum(w.collect_others() for w in writers.values())
  if missing and barrier is not None:
    raise DataError(f'{out}: {missing} shards still missing after every process finished')
  if missing:
    logging.info('prepare: %d shards of other processes are not written yet; the last process '
                 'to finish writes %s', missing, out / mf.MANIFEST)
    return None
  manifest = {'format_version': mf.format_version(data_format), 'source': source, 'params': params,
              'has_entropies': entropy_fn is not None, 'splits': {s: w.summary() for s, w in writers.items()}}
  if pairs:
    manifest['format'] = 'pairs'
  if entropy_fn is not None or not pairs:
    manifest['entropy_dtype'] = 'float16'
  mf.write_json_atomic(out / mf.MANIFEST, manifest)
  if barrier is not None:
    barrier('data_prep:manifest_written')
  return manifest

"""The Grain input pipeline: prepared ArrayRecord shards -> packed byte batches.

  DocumentSource: ArrayRecord bytes (+ parallel entropy shards) -> uint8 [n] (+ float16 [n])
  -> [evenly spread subset]                        data.train_fraction < 1 (train split)
  -> MapDataset: [process_index::process_count]   disjoint per-process documents
  -> EpochShuffleMapDataset(seed) -> .repeat(num_epochs)   new order every epoch
  -> .to_iter_dataset(ReadOptions)                 optional reader threads
  -> PackedBatchIterDataset                        wrap-packing, see `packing`
  -> .mp_prefetch(num_workers)                     optional worker processes

With workers, each worker reads, packs and batches its own slice of the
(shuffled) documents, and grain interleaves the workers' batches round-robin,
so only whole batches cross process boundaries. The iterator state is plain
JSON; it depends on num_workers (the slicing), so resume with the same
`num_workers`. For a finite eval pass, processes may yield different numbers
of batches; multi-host eval should run a fixed number of steps.
"""

import grain
import numpy as np
from absl import flags
from etils import epath

from data_prep import manifest as mf
from data_prep import writer
from data_prep.errors import DataError
from bltdiff.data import pair_batches, subset
from bltdiff.data.packing import PackedBatchIterDataset
from bltdiff.data.shuffle import EpochShuffleMapDataset


class DocumentSource(grain.sources.RandomAccessDataSource):
  """Random access to a split's documents: index -> {'tokens': uint8 [n], 'entropies'?: float16 [n]}."""

  def __init__(self, prepared_dir: str, split: str, *, with_entropies: bool = False):
    manifest = mf.read_manifest(prepared_dir)
    if with_entropies and not manifest['has_entropies']:
      raise DataError(f'{prepared_dir}: prepared without entropies (rerun prepare with --entropy_model)')
    paths = mf.shard_paths(prepared_dir, manifest, split)
    if not paths:
      raise DataError(f'{prepared_dir}: split {split!r} has no documents')
    self._bytes = grain.sources.ArrayRecordDataSource(paths)
    self._ents = (grain.sources.ArrayRecordDataSource(mf.shard_paths(prepared_dir, manifest, split, entropies=True))
                  if with_entropies else None)

  def __len__(self) -> int:
    return len(self._bytes)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    doc = {'tokens': np.frombuffer(self._bytes[index], np.uint8)}
    if self._ents is not None:
      doc['entropies'] = np.frombuffer(self._ents[index], np.float16)
    return doc

  def __repr__(self) -> str:
    return f'DocumentSource({len(self)} documents, entropies={self._ents is not None})'


def prepare_kwargs(data_config) -> dict:
  """data_prep.writer.prepare's keyword arguments from config.data."""
  kwargs = dict(paths=data_config.paths, data_files=data_config.data_files,
                validation_fraction=data_config.validation_fraction,
                builtin_max_bytes=data_config.builtin_max_bytes, doc_bytes=data_config.doc_bytes,
                shard_bytes=data_config.shard_bytes)
  if pair_batches.is_pairs(data_config):
    kwargs.update(data_format='pairs', passage_bytes=data_config.passage_bytes)
  return kwargs


def ensure_prepared(data_config, workdir: str, **processes) -> str:
  """Returns the prepared-shards directory for data_config.

  If data_config.prepared_dir is set, checks it (manifest, format version) and
  returns it; otherwise prepares data_config.source (builtin / text with
  data_config.paths, or any other source of `data_prep.prepare`) into
  f'{workdir}/data' if not already there, and returns that. Raises DataError.

  Multi-process runs pass `processes` (process_index, process_count,
  barrier: see data_prep.writer.prepare): the processes share the work.
  """
  if data_config.prepared_dir:
    mf.read_manifest(data_config.prepared_dir, pair_batches.data_format(data_config))
    return str(data_config.prepared_dir)
  out = str(epath.Path(workdir) / 'data')
  writer.prepare(data_config.source, out, **prepare_kwargs(data_config), **processes)
  return out


def document_dataset(prepared_dir: str, split: str, *, seed: int, process_index: int = 0,
                     process_count: int = 1, num_epochs: int | None = None,
                     with_entropies: bool = False, fraction: float = 1.0) -> grain.MapDataset:
  """This process's documents, shuffled per epoch: MapDataset of DocumentSource elements.

  fraction < 1 keeps only `subset.spread_subset`'s documents of the split (a
  data-scaling experiment: the same validation split, less training data).
  Process p then gets documents p, p + P, p + 2P, ... of those (P =
  process_count): disjoint across processes and together all of them.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  source = DocumentSource(prepared_dir, split, with_entropies=with_entropies)
  ds = subset.subset_dataset(source, fraction)[process_index::process_count]
  if len(ds) == 0:
    raise DataError(f'{prepared_dir}: split {split!r} has fewer documents ({len(source)}) than processes ({process_count})')
  return EpochShuffleMapDataset(ds, seed=seed).repeat(num_epochs)


def make_iterator(data_config, prepared_dir: str, split: str, *, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1, num_epochs: int | None = None):
  """Returns a grain DatasetIterator (get_state()/set_state()) yielding dicts of numpy arrays:

  'tokens': int32 [batch_size, data_config.seq_len], values in [0, 257): bytes,
    and vocab.BOUNDARY=256 after every document.
  'entropies': float32 [batch_size, seq_len], only when the manifest has
    entropies and data_config.use_entropies; packed in step with
    the tokens, 1e4 at BOUNDARY positions (a patch always starts there).
  batch_size is per process. num_epochs=None repeats forever (train); eval
  passes 1 (the last partial batch is dropped). The train split keeps
  data_config.train_fraction of its documents (`document_dataset`).
  With data_config.format == 'pairs', the batches of
  `bltdiff.data.pair_batches` instead (one pair per row).
  """
  if pair_batches.is_pairs(data_config):
    return pair_batches.make_pair_iterator(
        data_config, prepared_dir, split, batch_size=batch_size, seed=seed,
        process_index=process_index, process_count=process_count, num_epochs=num_epochs)
  use_ent = bool(data_config.use_entropies)
  if use_ent and not mf.read_manifest(prepared_dir)['has_entropies']:
    use_ent = False  # documented: entropies only when the data has them
  fraction = subset.split_fraction(data_config, split)
  ds = document_dataset(prepared_dir, split, seed=seed, process_index=process_index,
                        process_count=process_count, num_epochs=num_epochs, with_entropies=use_ent,
                        fraction=fraction)
  # Reads run in the calling thread by default: a reader thread costs more in
  # GIL hand-offs than it saves (80 -> 45 MB/s on 2 cores), and a batch takes
  # well under a millisecond next to a train step. Hosts that need more use
  # num_workers (processes) or read_threads (remote storage latency).
  threads = int(data_config.read_threads)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=64))
  packed = PackedBatchIterDataset(it_ds, batch_size=batch_size, seq_len=int(data_config.seq_len),
                                  with_entropies=use_ent)
  workers = int(data_config.num_workers)
  if workers > 0:
    if not flags.FLAGS.is_parsed():
      # grain's worker launcher reads its absl flags; outside app.run (tests,
      # notebooks) they are unparsed, and their defaults are what we want.
      flags.FLAGS.mark_as_parsed()
    # Each worker packs its own slice of the documents into whole batches:
    # one inter-process transfer per batch instead of one per document.
    packed = packed.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=4))
  return iter(packed)

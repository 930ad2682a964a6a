"""The Grain pipeline for (source, target) pairs: pair shards -> conditional batches.

  PairSource: pair ArrayRecord shards (`data_prep.manifest`, format 'pairs')
              -> {'source': uint8 [s], 'target': uint8 [t]} (+ 'entropies': float16 [s + t])
  -> [evenly spread subset]                           data.train_fraction < 1 (train split)
  -> MapDataset: [process_index::process_count]      disjoint per-process pairs
  -> EpochShuffleMapDataset(seed) -> .repeat(num_epochs)   new order every epoch
  -> .map(layout_pair)                                one fixed-length row per pair
  -> .to_iter_dataset(ReadOptions) -> .batch(batch_fn=stack_rows)

One row (seq_len L), positions left to right:

  tokens       [source bytes s][BOUNDARY][target bytes t][END][PAD ... PAD]
  target_mask  [False ...     ][False   ][True ...      ][True][False ...  ]
  source_len   s  (= the separator's position)

END is vocab.BOUNDARY written after the target when the target ended inside
the row; it is a target symbol (in target_mask), so every model learns where
a target stops, the way BOUNDARY ends every document of the text pipeline.
A target cut by the row (t = L − 1 − s) has no END: its row ends inside it.
target_mask is True exactly on the target bytes in the row and END: never on
the source, the separator (vocab.BOUNDARY) or PAD filler. A model conditions
on tokens[:s + 1] and is trained / scored on the masked positions; bits per
byte of a pair model are per target symbol (target_mask.sum()).

Truncation: the source gets at most S = min(floor(max_source_share·(L−1)), L−2)
positions and the target the rest, L−1−min(len(source), S) ≥ 1. A longer
source keeps its last S bytes (source_keep='end', the default: the text
right before the target, as continuation wants) or its first S bytes
(source_keep='start': an article's lead, as summarization usually keeps); a
longer target keeps its first bytes. The source budget does not grow when the
target is short, so the conditioning an evaluation sees never depends on the
length of the reference it is scored against.

Entropies (shards prepared with an entropy model, and use_entropies): the
source's and the target's stored entropies, each scored as a document of its
own (the separator starts a new document for the entropy model, as BOUNDARY
does in text), laid out like the tokens; BOUNDARY_ENTROPY at the separator,
END and PAD, so a patch starts at each.

Batches: dicts of numpy arrays
  'tokens'       int32 [batch, L]   bytes, vocab.BOUNDARY, vocab.PAD
  'target_mask'  bool  [batch, L]
  'source_len'   int32 [batch]
  'valid'        bool  [batch]      False only on filler rows of a final batch
  'entropies'    float32 [batch, L] only with entropies
A finite pass (num_epochs=1, evaluation) keeps its last partial batch,
filled up with rows of PAD (target_mask all False, source_len 0, valid
False), so every pair of a test set is scored; an endless training stream
never has a partial batch.

The iterator is a grain DatasetIterator: get_state() is plain JSON and
set_state() resumes at the same batch. No worker processes: a pair costs one
record read and one row fill; `read_threads` helps with slow storage.
"""

import functools
from typing import Sequence

import grain
import numpy as np
from etils import epath

from bltdiff import vocab
from bltdiff.data.packing import BOUNDARY_ENTROPY
from bltdiff.errors import ConfigError
from bltdiff.data import subset
from bltdiff.data.shuffle import EpochShuffleMapDataset
from data_prep import manifest as mf
from data_prep.errors import DataError

DEFAULT_MAX_SOURCE_SHARE = 0.5
SOURCE_KEEP = ('end', 'start')
FORMATS = ('text', 'pairs')


def data_format(data_config) -> str:
  """config.data.format: 'text' or 'pairs'. Runs saved before the field
  existed (their config.json has no data.format) are text runs."""
  return str(data_config.get('format', 'text'))


def is_pairs(data_config) -> bool:
  return data_format(data_config) == 'pairs'


def prepared_format(prepared_dir: str) -> str:
  """'text' or 'pairs': what a prepared directory holds (by its manifest)."""
  path = epath.Path(prepared_dir) / mf.MANIFEST
  return mf.data_format_of(mf.read_json(path), path)


class PairSource(grain.sources.RandomAccessDataSource):
  """Random access to a split's pairs: index -> {'source': uint8 [s], 'target': uint8 [t]}
  (+ 'entropies': float16 [s + t], the source's then the target's)."""

  def __init__(self, prepared_dir: str, split: str, *, with_entropies: bool = False):
    manifest = mf.read_manifest(prepared_dir, 'pairs')
    if with_entropies and not manifest['has_entropies']:
      raise DataError(f'{prepared_dir}: prepared without entropies (rerun prepare with --entropy_model)')
    paths = mf.shard_paths(prepared_dir, manifest, split)
    if not paths:
      raise DataError(f'{prepared_dir}: split {split!r} has no pairs')
    self._records = grain.sources.ArrayRecordDataSource(paths)
    self._ents = (grain.sources.ArrayRecordDataSource(mf.shard_paths(prepared_dir, manifest, split, entropies=True))
                  if with_entropies else None)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    source, target = mf.decode_pair(self._records[index])
    pair = {'source': np.frombuffer(source, np.uint8), 'target': np.frombuffer(target, np.uint8)}
    if self._ents is not None:
      pair['entropies'] = np.frombuffer(self._ents[index], np.float16)
    return pair

  def __repr__(self) -> str:
    return f'PairSource({len(self)} pairs)'


def max_source_bytes(seq_len: int, max_source_share: float) -> int:
  """S of the truncation rule: the most positions a source may take in a row."""
  return min(int(max_source_share * (seq_len - 1)), seq_len - 2)


def check_layout(seq_len: int, max_source_share: float, source_keep: str) -> None:
  """ConfigError (one line) unless the layout parameters give rows with a target position."""
  if seq_len < 2:
    raise ConfigError(f'data.seq_len: must be >= 2 for pairs (separator + one target byte), got {seq_len}')
  if not 0.0 <= max_source_share <= 1.0:
    raise ConfigError(f'data.max_source_share: must be in [0, 1], got {max_source_share}')
  if source_keep not in SOURCE_KEEP:
    raise ConfigError(f'data.source_keep: must be one of {", ".join(SOURCE_KEEP)}, got {source_keep!r}')


def layout_pair(pair: dict[str, np.ndarray], *, seq_len: int, max_source_share: float = DEFAULT_MAX_SOURCE_SHARE,
                source_keep: str = 'end') -> dict[str, np.ndarray]:
  """One pair -> one row of the module's layout: {'tokens': int32 [L],
  'target_mask': bool [L], 'source_len': int32 []} (+ 'entropies': float32 [L]
  when the pair has them)."""
  source, target = pair['source'], pair['target']
  s = min(len(source), max_source_bytes(seq_len, max_source_share))
  kept = slice(len(source) - s, len(source)) if source_keep == 'end' else slice(0, s)
  t = min(len(target), seq_len - 1 - s)
  end = s + 1 + t  # END's position, if the target ended inside the row
  tokens = np.full(seq_len, vocab.PAD, np.int32)
  tokens[:s] = source[kept]
  tokens[s] = vocab.BOUNDARY
  tokens[s + 1:end] = target[:t]
  target_mask = np.zeros(seq_len, bool)
  target_mask[s + 1:end] = True
  if t == len(target) and end < seq_len:
    tokens[end] = vocab.BOUNDARY
    target_mask[end] = True
  row = {'tokens': tokens, 'target_mask': target_mask, 'source_len': np.int32(s)}
  if 'entropies' in pair:
    ents = np.full(seq_len, BOUNDARY_ENTROPY, np.float32)
    ents[:s] = pair['entropies'][:len(source)][kept]
    ents[s + 1:s + 1 + t] = pair['entropies'][len(source):len(source) + t]
    row['entropies'] = ents
  return row


def source_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Batch rows with everything after the separator blanked (PAD, entropies
  BOUNDARY_ENTROPY, target_mask False): what a model is given to generate
  the targets of held-out pairs."""
  after = np.arange(rows['tokens'].shape[1])[None, :] > rows['source_len'][:, None]
  out = dict(rows, tokens=np.where(after, vocab.PAD, rows['tokens']),
             target_mask=np.zeros_like(rows['target_mask']))
  if 'entropies' in rows:
    out['entropies'] = np.where(after, BOUNDARY_ENTROPY, rows['entropies']).astype(np.float32)
  return out


def target_of(row: np.ndarray, source_len: int) -> tuple[np.ndarray, bool]:
  """(target bytes, ended) of a row of the layout (a data row or a generated
  one): the symbols after the separator up to the first BOUNDARY (END) or
  PAD; ended says whether END was there."""
  after = np.asarray(row)[int(source_len) + 1:]
  stop = np.flatnonzero(after >= vocab.NUM_BYTES)
  if not stop.size:
    return after, False
  return after[:stop[0]], bool(after[stop[0]] == vocab.BOUNDARY)


def stack_rows(rows: Sequence[dict[str, np.ndarray]], *, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
  """Rows -> one batch of the module's shapes; fewer rows than batch_size are
  followed by filler rows (PAD, no target, valid=False)."""
  n = len(rows)
  batch = {'tokens': np.full((batch_size, seq_len), vocab.PAD, np.int32),
           'target_mask': np.zeros((batch_size, seq_len), bool),
           'source_len': np.zeros(batch_size, np.int32),
           'valid': np.zeros(batch_size, bool)}
  if rows and 'entropies' in rows[0]:
    batch['entropies'] = np.full((batch_size, seq_len), BOUNDARY_ENTROPY, np.float32)
  for key in batch:
    if key != 'valid':
      batch[key][:n] = np.stack([r[key] for r in rows])
  batch['valid'][:n] = True
  return batch


def pair_dataset(prepared_dir: str, split: str, *, seed: int, process_index: int = 0, process_count: int = 1,
                 num_epochs: int | None = None, shuffle: bool = True,
                 with_entropies: bool = False, fraction: float = 1.0) -> grain.MapDataset:
  """This process's pairs, shuffled per epoch (unless shuffle=False): MapDataset of PairSource elements.

  fraction < 1 keeps only `subset.spread_subset`'s pairs of the split.
  Process p then gets pairs p, p + P, p + 2P, ... of those (P =
  process_count): disjoint across processes and together all of them.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  source = PairSource(prepared_dir, split, with_entropies=with_entropies)
  ds = subset.subset_dataset(source, fraction)[process_index::process_count]
  if len(ds) == 0:
    raise DataError(f'{prepared_dir}: split {split!r} has fewer pairs ({len(source)}) than processes ({process_count})')
  if shuffle:
    ds = EpochShuffleMapDataset(ds, seed=seed)
  return ds.repeat(num_epochs)


def make_pair_iterator(data_config, prepared_dir: str, split: str, *, batch_size: int, seed: int,
                       process_index: int = 0, process_count: int = 1, num_epochs: int | None = None,
                       shuffle: bool = True):
  """A grain DatasetIterator (get_state()/set_state()) of the module's batches.

  data_config: seq_len; optional max_source_share (default 0.5), source_keep
  ('end' / 'start'), read_threads (0), train_fraction (1.0), use_entropies (False; entropies only
  when the shards have them). batch_size is per process.
  num_epochs=None repeats forever (train); an evaluation passes 1, and
  shuffle=False for the shards' own order.
  """
  seq_len = int(data_config.seq_len)
  share = float(data_config.get('max_source_share', DEFAULT_MAX_SOURCE_SHARE))
  keep = str(data_config.get('source_keep', 'end'))
  check_layout(seq_len, share, keep)
  use_ent = bool(data_config.get('use_entropies', False)) and mf.read_manifest(prepared_dir, 'pairs')['has_entropies']
  fraction = subset.split_fraction(data_config, split)
  ds = pair_dataset(prepared_dir, split, seed=seed, process_index=process_index, process_count=process_count,
                    num_epochs=num_epochs, shuffle=shuffle, with_entropies=use_ent, fraction=fraction)
  ds = ds.map(functools.partial(layout_pair, seq_len=seq_len, max_source_share=share, source_keep=keep))
  threads = int(data_config.get('read_threads', 0))  # as in the text pipeline: the calling thread by default
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=64))
  batched = it_ds.batch(batch_size, drop_remainder=False,
                        batch_fn=functools.partial(stack_rows, batch_size=batch_size, seq_len=seq_len))
  return iter(batched)


def pair_documents(prepared_dir: str, max_bytes: int, *, with_entropies: bool, split: str = 'train'):
  """Sources and targets of a split's pairs, each as a document, in stored
  order, up to max_bytes: (tokens [list of int32 [n]], entropies [list of
  float32 [n]] or None), as `bltdiff.calibration.read_prepared_sample` gives
  for text (calibration packs them with BOUNDARY between, as a pair row has
  a separator between source and target)."""
  source = PairSource(prepared_dir, split, with_entropies=with_entropies)
  tokens, ents, total = [], [], 0
  for i in range(len(source)):
    pair = source[i]
    s = len(pair['source'])
    tokens += [pair['source'].astype(np.int32), pair['target'].astype(np.int32)]
    if with_entropies:
      ents += [pair['entropies'][:s].astype(np.float32), pair['entropies'][s:].astype(np.float32)]
    total += s + len(pair['target'])
    if total >= max_bytes:
      break
  return tokens, (ents if with_entropies else None)

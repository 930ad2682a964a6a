"""The on-disk layout of a prepared-data directory and its `manifest.json`.

A prepared directory holds one of two formats.

Text (format version 1): per split (train / validation), ArrayRecord shards
of raw document bytes (one record = one document) and, optionally, parallel
shards of per-byte entropies (record k = float16 entropies of document k, one
value per byte, in nats):

  DIR/manifest.json                       written last: its presence = done
  DIR/params.json                         the prepare parameters (resume guard)
  DIR/train-00000.arrayrecord             document bytes
  DIR/train-00000.entropy.arrayrecord     entropies (only with an entropy model)
  DIR/train-00000.done.json               per-shard completion marker + stats

manifest.json:
  {"format_version": 1, "source": ..., "params": {...},
   "has_entropies": bool, "entropy_dtype": "float16",
   "splits": {"train": {"documents": n, "bytes": b,
                        "shards": [{"file", "entropy_file", "documents", "bytes", "sha256"}]},
              "validation": {...}}}

Pairs (format version 2, `"format": "pairs"`): the same files, manifest and
completion markers, but one record = one (source, target) pair:

  record = uint32 little-endian len(source) ++ source bytes ++ target bytes

One record per pair, rather than parallel source / target shards, keeps a pair
in one read and makes a torn pair impossible. Counts are `"pairs"` instead of
`"documents"` and `bytes` counts whole records (4-byte headers included).
Entropy shards (with an entropy model) hold, per pair, float16 entropies of
the source then of the target, each scored as a document of its own
[len(source) + len(target)]; `"entropy_dtype": "float16"` is then written:

  {"format_version": 2, "format": "pairs", "source": ..., "params": {...},
   "has_entropies": bool,
   "splits": {"train": {"pairs": n, "bytes": b, "shards": [{"file", "pairs", "bytes", ...}]}, ...}}

Text keeps version 1 and its manifest exactly as before, so text directories
prepared earlier stay valid; code that predates pairs reads only version 1 and
so refuses a pair directory with its "format version" error instead of
reading pair records as documents. `read_manifest` checks that a directory
holds the format its caller reads.
"""

import json
import os
from typing import Any

from etils import epath

from data_prep.errors import DataError

FORMAT_VERSION = 1  # text
PAIRS_FORMAT_VERSION = 2
FORMATS = ('text', 'pairs')
MANIFEST = 'manifest.json'
PARAMS = 'params.json'
SPLITS = ('train', 'validation')
PAIR_HEADER_BYTES = 4  # uint32 little-endian source length


def format_version(data_format: str) -> int:
  return PAIRS_FORMAT_VERSION if data_format == 'pairs' else FORMAT_VERSION


def count_key(data_format: str) -> str:
  """The manifest's name for a split's record count: 'documents' or 'pairs'."""
  return 'pairs' if data_format == 'pairs' else 'documents'


def encode_pair(source: bytes, target: bytes) -> bytes:
  """One pair record: uint32 LE len(source) ++ source ++ target."""
  if len(source) >= 1 << 32:
    raise DataError(f'pair source of {len(source)} bytes exceeds the 4 GiB record header')
  return len(source).to_bytes(PAIR_HEADER_BYTES, 'little') + source + target


def decode_pair(record: bytes) -> tuple[bytes, bytes]:
  """(source, target) of a pair record; DataError if it is not one."""
  if len(record) < PAIR_HEADER_BYTES:
    raise DataError(f'pair record of {len(record)} bytes is shorter than its {PAIR_HEADER_BYTES}-byte header')
  n = int.from_bytes(record[:PAIR_HEADER_BYTES], 'little')
  if n > len(record) - PAIR_HEADER_BYTES:
    raise DataError(f'pair record header says {n} source bytes, the record holds {len(record) - PAIR_HEADER_BYTES}')
  return record[PAIR_HEADER_BYTES:PAIR_HEADER_BYTES + n], record[PAIR_HEADER_BYTES + n:]


def shard_name(split: str, index: int) -> str:
  return f'{split}-{index:05d}.arrayrecord'


def entropy_shard_name(split: str, index: int) -> str:
  return f'{split}-{index:05d}.entropy.arrayrecord'


def done_name(split: str, index: int) -> str:
  return f'{split}-{index:05d}.done.json'


def write_json_atomic(path: epath.PathLike, obj: Any) -> None:
  """Writes JSON to a temporary file, then renames: readers never see half a
  file (local or gs://, through etils.epath)."""
  path = epath.Path(path)
  tmp = path.with_name(f'{path.name}.tmp-{os.getpid()}')
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
  tmp.replace(path)


def read_json(path: epath.PathLike) -> Any:
  try:
    return json.loads(epath.Path(path).read_text())
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except PermissionError:
    raise DataError(f'{path}: permission denied') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: not valid JSON ({e})') from None


def data_format_of(manifest: dict, path: epath.PathLike) -> str:
  """'text' or 'pairs' by the manifest's version (and format field); DataError if neither."""
  version = manifest.get('format_version') if isinstance(manifest, dict) else None
  if version == FORMAT_VERSION:
    return 'text'
  if version == PAIRS_FORMAT_VERSION and manifest.get('format') == 'pairs':
    return 'pairs'
  raise DataError(f'{path}: format version {version!r}, this code reads versions {FORMAT_VERSION} (text) and '
                  f'{PAIRS_FORMAT_VERSION} (pairs); re-prepare the data')


def read_manifest(directory: epath.PathLike, data_format: str = 'text') -> dict:
  """Reads and checks DIR/manifest.json; raises DataError if absent, foreign,
  or of another format than `data_format` ('text' or 'pairs')."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    raise DataError(f'{directory}: prepared-data directory not found')
  path = directory / MANIFEST
  if not path.exists():
    raise DataError(f'{path}: no manifest; run `python -m data_prep.prepare --out={directory}` first (or it was interrupted: rerun it)')
  manifest = read_json(path)
  found = data_format_of(manifest, path)
  if found != data_format:
    raise DataError(f'{directory}: holds {found} data, this reader needs {data_format} '
                    f'(prepare with `python -m data_prep.prepare --format={data_format}`)')
  for split in SPLITS:
    for shard in manifest['splits'][split]['shards']:
      for key in ('file', 'entropy_file'):
        if shard.get(key) and not (directory / shard[key]).exists():
          raise DataError(f'{directory / shard[key]}: shard listed in the manifest is missing')
  return manifest


def shard_paths(directory: epath.PathLike, manifest: dict, split: str, *, entropies: bool = False) -> list[str]:
  """Paths of a split's byte shards (or entropy shards), in record order:
  local, or gs:// URLs, which ArrayRecord's reader opens itself."""
  if split not in manifest['splits']:
    raise DataError(f'unknown split {split!r}; have {sorted(manifest["splits"])}')
  key = 'entropy_file' if entropies else 'file'
  return [str(epath.Path(directory) / s[key]) for s in manifest['splits'][split]['shards']]

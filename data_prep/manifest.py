"""The on-disk layout of a prepared-data directory and its `manifest.json`.

A prepared directory holds, per split (train / validation), ArrayRecord shards
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
                        "shards": [{"file", "entropy_file", "documents", "bytes"}]},
              "validation": {...}}}
"""

import json
import os
from pathlib import Path
from typing import Any

from data_prep.errors import DataError

FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
PARAMS = 'params.json'
SPLITS = ('train', 'validation')


def shard_name(split: str, index: int) -> str:
  return f'{split}-{index:05d}.arrayrecord'


def entropy_shard_name(split: str, index: int) -> str:
  return f'{split}-{index:05d}.entropy.arrayrecord'


def done_name(split: str, index: int) -> str:
  return f'{split}-{index:05d}.done.json'


def write_json_atomic(path: Path, obj: Any) -> None:
  """Writes JSON to a temporary file, then renames: readers never see half a file."""
  tmp = path.with_name(f'{path.name}.tmp-{os.getpid()}')
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
  os.replace(tmp, path)


def read_json(path: Path) -> Any:
  try:
    return json.loads(Path(path).read_text())
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except PermissionError:
    raise DataError(f'{path}: permission denied') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f'{path}: not valid JSON ({e})') from None


def read_manifest(directory: str | os.PathLike) -> dict:
  """Reads and checks DIR/manifest.json; raises DataError if absent or foreign."""
  directory = Path(directory)
  if not directory.is_dir():
    raise DataError(f'{directory}: prepared-data directory not found')
  path = directory / MANIFEST
  if not path.exists():
    raise DataError(f'{path}: no manifest; run `python -m data_prep.prepare --out={directory}` first (or it was interrupted: rerun it)')
  manifest = read_json(path)
  version = manifest.get('format_version') if isinstance(manifest, dict) else None
  if version != FORMAT_VERSION:
    raise DataError(f'{path}: format version {version!r}, this code reads version {FORMAT_VERSION}; re-prepare the data')
  for split in SPLITS:
    for shard in manifest['splits'][split]['shards']:
      for key in ('file', 'entropy_file'):
        if shard.get(key) and not (directory / shard[key]).exists():
          raise DataError(f'{directory / shard[key]}: shard listed in the manifest is missing')
  return manifest


def shard_paths(directory: str | os.PathLike, manifest: dict, split: str, *, entropies: bool = False) -> list[str]:
  """Absolute paths of a split's byte shards (or entropy shards), in record order."""
  if split not in manifest['splits']:
    raise DataError(f'unknown split {split!r}; have {sorted(manifest["splits"])}')
  key = 'entropy_file' if entropies else 'file'
  return [str(Path(directory) / s[key]) for s in manifest['splits'][split]['shards']]

"""ArrayRecord shard files, local or gs://, written atomically.

ArrayRecord's Python writer writes local files only (a riegeli FdWriter: a
gs:// path fails with "open() failed ... opening gs://..."), while its reader
opens gs:// itself (riegeli's GcsReader is built into array_record 0.8.6), so
prepared shards in a bucket are read in place but written through a local
temporary file that etils.epath copies into the bucket.
"""

import os
import tempfile
from typing import Sequence

from etils import epath


def is_local(path: epath.PathLike) -> bool:
  return '://' not in os.fspath(path)


def _write_array_record(path: str, records: Sequence[bytes]) -> None:
  from array_record.python.array_record_module import ArrayRecordWriter
  # group_size:1 makes every record its own chunk: cheap random access by index.
  writer = ArrayRecordWriter(path, 'group_size:1')
  try:
    for r in records:
      writer.write(r)
  finally:
    writer.close()


def write_records(path: epath.Path, records: Sequence[bytes]) -> None:
  """Writes one ArrayRecord file atomically (temporary name, then rename).

  ArrayRecord's writer writes local files only (a riegeli FdWriter; its reader
  opens gs:// itself): a shard of a gs:// directory is written to a local
  temporary file, then copied by etils.epath (a GCS object appears whole)."""
  if is_local(path):
    tmp = path.with_name(f'{path.name}.tmp-{os.getpid()}')
    _write_array_record(os.fspath(tmp), records)
    tmp.replace(path)
    return
  with tempfile.TemporaryDirectory(prefix='bltdiff_shard_') as local:
    _write_array_record(os.path.join(local, path.name), records)
    epath.Path(local, path.name).copy(path, overwrite=True)

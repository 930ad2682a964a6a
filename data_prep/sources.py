"""Document streams: each source yields documents as raw `bytes`, in a fixed order.

Every source is a deterministic iterator (same input -> same documents in the
same order), because resuming a killed `prepare` rebuilds shards from the
stream and skips those already written.

Splitting rule (all sources): a document longer than `doc_bytes` is cut into
consecutive pieces of at most `doc_bytes` bytes, each ending just after the
last separator (newline; a space for text8) in its window when that separator
lies in the window's second half, else cut hard. Concatenating the pieces gives
the original back. This turns a few long books into enough documents for a
held-out split; `doc_bytes=0` keeps one input document = one document.

Sources needing the network on a user's machine (openwebtext, wikitext103,
lm1b) read the same loaders from local files in tests:
  openwebtext  HF `datasets` `Skylion007/openwebtext`, column `text`, one row =
               one document; `data_files=` local parquet / JSONL with `text`.
  wikitext103  HF `Salesforce/wikitext` `wikitext-103-raw-v1`, one row = one
               line; lines are grouped into articles at top-level headings
               (` = Title = `); `data_files=` local parquet / JSONL.
  lm1b         TFDS `lm1b` (array_record format, via `tfds.data_source`), one
               sentence = one document; tests use `tfds.testing.mock_data`.
  text8        the `text8` member of text8.zip: one 100 MB line, cut by the
               rule above at spaces.
"""

import glob
import os
import re
import sysconfig
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from data_prep.errors import DataError

DEFAULT_DOC_BYTES = 1 << 16
DEFAULT_BUILTIN_MAX_BYTES = 4 << 20
SOURCES = ('text', 'builtin', 'openwebtext', 'wikitext103', 'lm1b', 'text8')


def last_separator(doc: bytes, seps: bytes, start: int, end: int) -> int:
  """Index of the last byte of doc[start:end] that is one of the bytes `seps`; -1 if none."""
  return max(doc.rfind(seps[i:i + 1], start, end) for i in range(len(seps)))


def split_document(doc: bytes, doc_bytes: int, sep: bytes = b'\n') -> Iterator[bytes]:
  """Cuts one document by the module's splitting rule; yields >= 1 piece (b'' -> b'').

  sep: the separator byte, or several (a cut may follow any of them).
  """
  if doc_bytes <= 0 or len(doc) <= doc_bytes:
    yield doc
    return
  start = 0
  while len(doc) - start > doc_bytes:
    cut = last_separator(doc, sep, start + doc_bytes // 2, start + doc_bytes)
    end = cut + 1 if cut >= 0 else start + doc_bytes
    yield doc[start:end]
    start = end
  yield doc[start:]


def split_documents(docs: Iterable[bytes], doc_bytes: int, sep: bytes = b'\n') -> Iterator[bytes]:
  for doc in docs:
    yield from split_document(doc, doc_bytes, sep)


def comma_list(paths: str | Sequence[str]) -> list[str]:
  """'a, b,,c' or ['a', ' b'] -> ['a', 'b', 'c'] (blank entries dropped)."""
  if isinstance(paths, str):
    paths = paths.split(',')
  return [p.strip() for p in paths if p and p.strip()]


def _walk_files(directory: Path) -> list[Path]:
  def onerror(err: OSError):
    raise DataError(f'{err.filename}: cannot read directory ({err.strerror})')
  if not os.access(directory, os.R_OK | os.X_OK):
    raise DataError(f'{directory}: cannot read directory (permission denied)')
  files = []
  for root, dirs, names in os.walk(directory, onerror=onerror):
    dirs.sort()
    files.extend(Path(root) / n for n in sorted(names) if not n.startswith('.'))
  return files


def expand_paths(paths: str | Sequence[str]) -> list[Path]:
  """Comma-separated files / directories (recursive) / globs -> sorted unique files."""
  specs = comma_list(paths)
  if not specs:
    raise DataError('no input paths given (--paths=FILE,DIR,GLOB)')
  files: list[Path] = []
  for spec in specs:
    if glob.has_magic(spec):
      matches = sorted(glob.glob(spec, recursive=True))
      if not matches:
        raise DataError(f'{spec}: no files match this pattern')
      for m in matches:
        files.extend(_walk_files(Path(m)) if Path(m).is_dir() else [Path(m)])
    elif Path(spec).is_dir():
      files.extend(_walk_files(Path(spec)))
    elif Path(spec).exists():
      files.append(Path(spec))
    else:
      raise DataError(f'{spec}: no such file or directory')
  seen, unique = set(), []
  for f in files:
    if f not in seen:
      seen.add(f)
      unique.append(f)
  return unique


def read_file(path: Path) -> bytes:
  try:
    return path.read_bytes()
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except IsADirectoryError:
    raise DataError(f'{path}: is a directory') from None
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror})') from None


def text_documents(paths: str | Sequence[str]) -> tuple[Iterator[bytes], int]:
  """One file = one document (any bytes). Returns (documents, total bytes)."""
  files = expand_paths(paths)
  total = sum(f.stat().st_size for f in files)
  return (read_file(f) for f in files), total


def builtin_files() -> list[Path]:
  """The running Python's own docs and standard library, in a fixed order.

  `pydoc_data/topics.py` (the language reference as text) comes first, then
  every stdlib `.py` file sorted by relative path, without site-packages and
  test suites (they hold generated and deliberately odd files).
  """
  stdlib = Path(sysconfig.get_paths()['stdlib'])
  if not stdlib.is_dir():
    raise DataError(f'{stdlib}: the Python standard library is not on disk')
  skip = {'site-packages', 'dist-packages', 'test', 'tests', 'idle_test', '__pycache__'}
  topics = stdlib / 'pydoc_data' / 'topics.py'
  files = [topics] if topics.exists() else []
  for root, dirs, names in os.walk(stdlib):
    dirs[:] = sorted(d for d in dirs if d not in skip)
    files.extend(Path(root) / n for n in sorted(names) if n.endswith('.py') and Path(root) / n != topics)
  return files


def builtin_documents(max_bytes: int = DEFAULT_BUILTIN_MAX_BYTES) -> tuple[Iterator[bytes], int]:
  """Whole files of `builtin_files()` until `max_bytes` is reached (the last file is cut)."""
  def gen():
    left = max_bytes
    for f in builtin_files():
      if left <= 0:
        return
      doc = read_file(f)[:left]
      left -= len(doc)
      yield doc
  return gen(), max_bytes


def hf_rows(hub_name: str, hub_config: str | None, data_files: Sequence[str], split: str, *,
            columns: Sequence[str] = ('text',), revision: str | None = None) -> Iterator[dict]:
  """Rows of a HF dataset, streamed: from the hub, or from local parquet / JSONL files.

  Checks up front that the rows have `columns` (when the format tells them).
  """
  import datasets  # heavy import, only for the sources that need it
  if data_files:
    files = [str(f) for f in expand_paths(data_files)]
    ext = {Path(f).suffix.lower() for f in files}
    if ext <= {'.parquet'}:
      builder = 'parquet'
    elif ext <= {'.jsonl', '.json'}:
      builder = 'json'
    else:
      raise DataError(f'data files must all be .parquet or all .jsonl/.json, got {sorted(ext)}')
    ds = datasets.load_dataset(builder, data_files=files, split='train', streaming=True)
  else:
    ds = datasets.load_dataset(hub_name, hub_config, split=split, streaming=True, revision=revision)
  missing = [c for c in columns if ds.column_names is not None and c not in ds.column_names]
  if missing:
    where = hub_name if not data_files else data_files[0]
    raise DataError(f'{where}: no {", ".join(f"`{c}`" for c in missing)} column (have {ds.column_names})')
  return iter(ds)


def as_bytes(text) -> bytes:
  """A dataset's text field (str or bytes) as bytes; str is UTF-8 encoded."""
  return text if isinstance(text, bytes) else text.encode('utf-8', 'surrogateescape')


def openwebtext_documents(data_files: Sequence[str] = (), split: str = 'train') -> Iterator[bytes]:
  for row in hf_rows('Skylion007/openwebtext', None, data_files, split):
    yield as_bytes(row['text'])


_WIKI_TITLE = re.compile(r'^ = [^=].* = \n?$')


def group_wikitext_articles(lines: Iterable[str]) -> Iterator[bytes]:
  """WikiText rows are lines; an article starts at a top-level ` = Title = ` line."""
  article: list[str] = []
  for line in lines:
    if _WIKI_TITLE.match(line) and any(l.strip() for l in article):
      yield as_bytes(''.join(article))
      article = []
    article.append(line)
  if any(l.strip() for l in article):
    yield as_bytes(''.join(article))


def wikitext103_documents(data_files: Sequence[str] = (), split: str = 'train') -> Iterator[bytes]:
  rows = hf_rows('Salesforce/wikitext', 'wikitext-103-raw-v1', data_files, split)
  return group_wikitext_articles(row['text'] for row in rows)


def tfds_examples(name: str, split: str, data_dir: str | None) -> Iterator[dict]:
  """Examples of TFDS dataset `name` in index order, through TFDS's random-access
  reader (array_record format; no TensorFlow graph needed)."""
  from bltdiff import tensorflow_import  # TFDS imports TensorFlow: without its notices
  tfds = tensorflow_import.import_quietly('tensorflow_datasets')
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir,
                              builder_kwargs={'file_format': 'array_record'})
  except Exception as e:  # TFDS raises many types for "not prepared / no network"
    raise DataError(f'{name}: TFDS could not open it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from None
  for i in range(len(source)):
    yield source[i]


def lm1b_documents(tfds_data_dir: str | None = None, split: str = 'train') -> Iterator[bytes]:
  """LM1B sentences, one per document."""
  for example in tfds_examples('lm1b', split, tfds_data_dir):
    yield as_bytes(example['text'])


def text8_documents(zip_path: str) -> tuple[Iterator[bytes], int]:
  """The single `text8` line of text8.zip, read in 1 MiB blocks (cut later at spaces)."""
  path = Path(zip_path)
  if not path.exists():
    raise DataError(f'{path}: no such file')
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile:
    raise DataError(f'{path}: not a zip file') from None
  names = zf.namelist()
  if 'text8' not in names:
    raise DataError(f'{path}: no `text8` member (have {names[:5]})')
  total = zf.getinfo('text8').file_size

  def blocks():
    with zf, zf.open('text8') as f:
      while block := f.read(1 << 20):
        yield block
  return blocks(), total


def rechunk_stream(blocks: Iterable[bytes], doc_bytes: int, sep: bytes) -> Iterator[bytes]:
  """Treats `blocks` as ONE document split across reads; cuts it by the splitting rule."""
  buf = b''
  for block in blocks:
    buf += block
    pieces = list(split_document(buf, doc_bytes, sep))
    buf = pieces.pop()  # the tail may grow with the next block
    yield from pieces
  yield buf

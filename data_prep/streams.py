"""The record streams of a data source: documents (after the splitting rule)
for text shards, and split units of (source, target) pairs for pair shards.
`data_prep.writer` writes them; `data_prep.sources` and
`data_prep.pair_sources` read the datasets."""

from typing import Iterator, Sequence

from data_prep import pair_sources, sources
from data_prep.errors import DataError
from data_prep.pair_sources import Pair


def documents(source: str, *, paths: str | Sequence[str] = (), data_files: str | Sequence[str] = (),
              builtin_max_bytes: int = sources.DEFAULT_BUILTIN_MAX_BYTES,
              doc_bytes: int = sources.DEFAULT_DOC_BYTES, source_split: str = 'train',
              tfds_data_dir: str | None = None) -> tuple[Iterator[bytes], int | None]:
  """The document stream of `source` after the splitting rule, and its total size if known."""
  data_files = sources.comma_list(data_files) or sources.comma_list(paths)
  if source in pair_sources.PAIR_SOURCES:
    raise DataError(f'{source} is a dataset of (source, target) pairs: prepare it with --format=pairs')
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


def pair_units(source: str, *, paths: str | Sequence[str] = (), data_files: str | Sequence[str] = (),
               passage_bytes: int = pair_sources.DEFAULT_PASSAGE_BYTES,
               builtin_max_bytes: int = sources.DEFAULT_BUILTIN_MAX_BYTES,
               doc_bytes: int = sources.DEFAULT_DOC_BYTES, source_split: str = 'train',
               tfds_data_dir: str | None = None) -> tuple[Iterator[list[Pair]], int | None]:
  """The pair stream of `source` in split units (see the module docstring), and
  the total input size if known: a pair dataset gives units of one pair, a text
  source the passage pairs of each of its documents."""
  files = sources.comma_list(data_files) or sources.comma_list(paths)
  if source == 'cnn_dailymail':
    return ([p] for p in pair_sources.cnn_dailymail_pairs(tfds_data_dir, source_split, files)), None
  if source == 'xsum':
    return ([p] for p in pair_sources.xsum_pairs(files, source_split)), None
  if source == 'writingprompts':
    return ([p] for p in pair_sources.writingprompts_pairs(files, source_split)), None
  if source not in sources.SOURCES:
    raise DataError(f'unknown source {source!r}; with --format=pairs choose a pair dataset '
                    f'({", ".join(pair_sources.PAIR_SOURCES)}) or a text source for passage -> next passage '
                    f'pairs ({", ".join(sources.SOURCES)})')
  if passage_bytes <= 0:
    raise DataError(f'passage_bytes must be positive, got {passage_bytes}')
  if 0 < doc_bytes < 2 * passage_bytes:
    raise DataError(f'doc_bytes={doc_bytes} cuts documents shorter than two passages of {passage_bytes} bytes '
                    f'(no pairs); use doc_bytes >= {2 * passage_bytes} or 0')
  docs, total = documents(source, paths=paths, data_files=data_files, builtin_max_bytes=builtin_max_bytes,
                          doc_bytes=doc_bytes, source_split=source_split, tfds_data_dir=tfds_data_dir)
  return (pair_sources.passage_pairs(doc, passage_bytes) for doc in docs), total

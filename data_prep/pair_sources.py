"""Pair streams: (source, target) examples as raw `bytes`, in a fixed order.

The pair counterpart of `data_prep.sources` (named alike: that module streams
documents, this one pairs). Every stream is deterministic, for the same reason
as there: a resumed `prepare` rebuilds shards from the stream and skips those
already written. Text fields are stored as they come (UTF-8), not cleaned.

Datasets of pairs; each reads the dataset's own split (`split=`: train /
validation / test). Tests read local fixtures through the same loaders.
  cnn_dailymail   TFDS `cnn_dailymail` (default version 3.4.0; features
                  `article`, `highlights`, `id`, `publisher`): source =
                  article, target = highlights (one highlight per line, as
                  TFDS joins them since 2.0.0). Read through `tfds.data_source`
                  in array_record format, like lm1b; tests use
                  `tfds.testing.mock_data`. Or `data_files=` local parquet /
                  JSONL with `article` and `highlights` columns (e.g. the HF
                  `abisee/cnn_dailymail` 3.0.0 files).
  xsum            HF `EdinburghNLP/xsum`, columns `document`, `summary`, `id`:
                  source = document, target = summary. The repository's main
                  branch holds a loading script, which `datasets` >= 4 no
                  longer runs, so the hub's parquet export is read
                  (revision `refs/convert/parquet`). Or local parquet / JSONL.
  writingprompts  HF `euclaise/writingprompts` (parquet, splits train /
                  validation / test; the Fan et al. 2018 data), columns
                  `prompt`, `story`: source = prompt, target = story. The text
                  keeps the dataset's own markup (`[ WP ]` tags, `<newline>`).
                  Or local parquet / JSONL. One prompt has several stories.

Passage -> next passage, from any document (any text source): the document is
cut into consecutive passages of at most `passage_bytes` bytes by the
splitting rule of `data_prep.sources` with whitespace as the separator (a
passage ends just after the last whitespace byte of its window when that lies
in the window's second half, else it is cut hard), and pair k is (passage k,
passage k+1). Pairs never span two documents; a document of one passage gives
none. Passages rejoin to the document.
"""

from typing import Iterable, Iterator, Sequence

from data_prep import sources
from data_prep.errors import DataError

Pair = tuple[bytes, bytes]

DEFAULT_PASSAGE_BYTES = 256
WHITESPACE = b' \t\n\r\x0b\x0c'
PAIR_SOURCES = ('cnn_dailymail', 'xsum', 'writingprompts')

XSUM_HUB = 'EdinburghNLP/xsum'
XSUM_REVISION = 'refs/convert/parquet'
WRITINGPROMPTS_HUB = 'euclaise/writingprompts'


def passages(doc: bytes, passage_bytes: int) -> list[bytes]:
  """The document's passages by the module's rule (b'' -> [b''])."""
  if passage_bytes <= 0:
    raise DataError(f'passage_bytes must be positive, got {passage_bytes}')
  return list(sources.split_document(doc, passage_bytes, WHITESPACE))


def passage_pairs(doc: bytes, passage_bytes: int) -> list[Pair]:
  """[(passage k, passage k+1) for every k] of one document."""
  parts = passages(doc, passage_bytes)
  return list(zip(parts[:-1], parts[1:]))


def column_pairs(rows: Iterable[dict], source_column: str, target_column: str, where: str) -> Iterator[Pair]:
  """(row[source_column], row[target_column]) as bytes; DataError for a row without them."""
  for i, row in enumerate(rows):
    source, target = row.get(source_column), row.get(target_column)
    if source is None or target is None:
      raise DataError(f'{where}: row {i} has no `{source_column}` or `{target_column}` value')
    yield sources.as_bytes(source), sources.as_bytes(target)


def _where(hub_name: str, data_files: Sequence[str]) -> str:
  return str(data_files[0]) if data_files else hub_name


def cnn_dailymail_pairs(tfds_data_dir: str | None = None, split: str = 'train',
                        data_files: Sequence[str] = ()) -> Iterator[Pair]:
  """article -> highlights: TFDS `cnn_dailymail`, or local parquet / JSONL files."""
  if data_files:
    rows = sources.hf_rows('cnn_dailymail', None, data_files, split, columns=('article', 'highlights'))
  else:
    rows = sources.tfds_examples('cnn_dailymail', split, tfds_data_dir)
  return column_pairs(rows, 'article', 'highlights', _where('cnn_dailymail', data_files))


def xsum_pairs(data_files: Sequence[str] = (), split: str = 'train') -> Iterator[Pair]:
  """document -> summary: HF `EdinburghNLP/xsum` (parquet export), or local files."""
  rows = sources.hf_rows(XSUM_HUB, None, data_files, split, columns=('document', 'summary'),
                         revision=None if data_files else XSUM_REVISION)
  return column_pairs(rows, 'document', 'summary', _where(XSUM_HUB, data_files))


def writingprompts_pairs(data_files: Sequence[str] = (), split: str = 'train') -> Iterator[Pair]:
  """prompt -> story: HF `euclaise/writingprompts`, or local files."""
  rows = sources.hf_rows(WRITINGPROMPTS_HUB, None, data_files, split, columns=('prompt', 'story'))
  return column_pairs(rows, 'prompt', 'story', _where(WRITINGPROMPTS_HUB, data_files))

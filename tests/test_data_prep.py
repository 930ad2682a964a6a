"""data_prep: every source's real loader on local fixtures; bytes in == bytes out; resume; errors."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data_prep import manifest as mf
from data_prep import writer as prep
from data_prep import sources
from data_prep.errors import DataError
from bltdiff.data.pipeline import DocumentSource

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / 'shared'

ODD_DOCS = [
    b'',  # empty document
    b'plain ascii\n',
    b'\x00\x00NUL bytes\x00inside\x00',
    bytes(range(256)) * 3,  # every byte value, invalid UTF-8
    b'\xff\xfe\xc3\x28 broken utf-8 \xe2\x82',
    np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),  # larger than a shard
    'ünïcödé ✓\n'.encode(),
    b'',
]


def read_split(directory, split) -> list[bytes]:
  if not mf.read_manifest(directory)['splits'][split]['documents']:
    return []
  src = DocumentSource(str(directory), split)
  return [src[i]['tokens'].tobytes() for i in range(len(src))]


def merge_splits(directory, fraction) -> list[bytes]:
  """Reassembles the source stream order from the two splits, by the split rule."""
  train, val = iter(read_split(directory, 'train')), iter(read_split(directory, 'validation'))
  n = sum(s['documents'] for s in mf.read_manifest(directory)['splits'].values())
  return [next(val) if prep.is_validation(i, fraction) else next(train) for i in range(n)]


def write_files(root: Path, docs) -> list[Path]:
  root.mkdir(parents=True, exist_ok=True)
  files = []
  for i, d in enumerate(docs):
    f = root / f'doc{i:03d}.bin'
    f.write_bytes(d)
    files.append(f)
  return files


def test_bytes_in_equal_bytes_out(tmp_path):
  write_files(tmp_path / 'in', ODD_DOCS)
  m = prep.prepare('text', tmp_path / 'out', paths=str(tmp_path / 'in'), validation_fraction=0.3,
                   shard_bytes=1000, doc_bytes=0, log_every_s=0)
  assert merge_splits(tmp_path / 'out', 0.3) == ODD_DOCS
  total = m['splits']['train']['bytes'] + m['splits']['validation']['bytes']
  assert total == sum(map(len, ODD_DOCS))
  assert m['splits']['validation']['documents'] == int(len(ODD_DOCS) * 0.3)
  assert m['format_version'] == mf.FORMAT_VERSION and not m['has_entropies']
  # The 5000-byte document, larger than a 1000-byte shard, closes a shard on its own record.
  assert len(m['splits']['train']['shards']) >= 2 and max(s['bytes'] for s in m['splits']['train']['shards']) >= 5000
  assert not list((tmp_path / 'out').glob('*.tmp-*'))


def test_split_rule_is_exact_and_spread():
  flags = [prep.is_validation(i, 0.1) for i in range(1000)]
  assert sum(flags) == 100 and flags.index(True) == 9 and not prep.is_validation(5, 0.0)


@pytest.mark.parametrize('sep', [b'\n', b' '])
def test_split_document_pieces_rejoin(sep):
  rng = np.random.default_rng(1)
  doc = sep.join(rng.integers(97, 123, rng.integers(1, 40)).astype(np.uint8).tobytes() for _ in range(400))
  pieces = list(sources.split_document(doc, 500, sep))
  assert b''.join(pieces) == doc and len(pieces) > 1
  assert all(0 < len(p) <= 500 for p in pieces)
  assert all(p.endswith(sep) for p in pieces[:-1])
  assert list(sources.split_document(b'', 500)) == [b'']
  blocks = [doc[i:i + 777] for i in range(0, len(doc), 777)]
  assert list(sources.rechunk_stream(blocks, 500, sep)) == pieces


def test_killed_prepare_resumes_without_redoing_shards(tmp_path, monkeypatch):
  docs = [bytes([65 + i % 26]) * (300 + 37 * i) for i in range(40)]
  write_files(tmp_path / 'in', docs)
  kwargs = dict(paths=str(tmp_path / 'in'), validation_fraction=0.1, shard_bytes=2000, doc_bytes=0)
  real_write = prep._write_records
  calls = []

  def killed_on_third(path, records):
    calls.append(path.name)
    if len(calls) == 3:  # dies mid-write: a temporary file, no rename
      (path.parent / f'{path.name}.tmp-{os.getpid()}').write_bytes(b'half a shard')
      raise KeyboardInterrupt
    real_write(path, records)

  monkeypatch.setattr(prep, '_write_records', killed_on_third)
  with pytest.raises(KeyboardInterrupt):
    prep.prepare('text', tmp_path / 'out', **kwargs)
  out = tmp_path / 'out'
  assert not (out / mf.MANIFEST).exists()
  assert sorted(p.name for p in out.glob('*.arrayrecord')) == sorted(calls[:2])
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob('*.arrayrecord')}

  rerun = []
  monkeypatch.setattr(prep, '_write_records', lambda path, records: (rerun.append(path.name), real_write(path, records)))
  m = prep.prepare('text', out, **kwargs)
  assert not set(rerun) & set(calls[:2])  # completed shards were not rewritten
  assert {n: (out / n).stat().st_mtime_ns for n in mtimes} == mtimes
  n_shards = sum(len(s['shards']) for s in m['splits'].values())
  assert len(rerun) == n_shards - 2
  assert not list(out.glob('*.tmp-*'))  # the killed run's half shard is gone
  clean = prep.prepare('text', tmp_path / 'clean', **kwargs)
  assert m['splits'] == clean['splits']
  assert merge_splits(out, 0.1) == docs
  # A third run finds the manifest and does nothing.
  rerun.clear()
  prep.prepare('text', out, **kwargs)
  assert rerun == []


def test_entropies_stored_beside_bytes(tmp_path):
  docs = [b'hello world\n' * 20, b'', b'\x00\xff' * 100]
  write_files(tmp_path / 'in', docs)
  fn = lambda batch: [np.linspace(0, 5.5, len(d)) for d in batch]
  m = prep.prepare('text', tmp_path / 'out', paths=str(tmp_path / 'in'), validation_fraction=0.0,
                   doc_bytes=0, entropy_fn=fn)
  assert m['has_entropies'] and m['splits']['train']['shards'][0]['entropy_file']
  src = DocumentSource(str(tmp_path / 'out'), 'train', with_entropies=True)
  for i, d in enumerate(docs):
    assert src[i]['tokens'].tobytes() == d
    np.testing.assert_array_equal(src[i]['entropies'], np.linspace(0, 5.5, len(d)).astype(np.float16))


def test_openwebtext_parquet_and_jsonl_fixtures(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  texts = ['First document.\nWith two lines.', '', 'Ünïcode ✓ and\x00NUL', 'x' * 3000]
  pq.write_table(pa.table({'text': texts, 'other': list(range(4))}), tmp_path / 'owt.parquet')
  (tmp_path / 'owt.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in texts))
  for name in ('owt.parquet', 'owt.jsonl'):
    out = tmp_path / name.replace('.', '_')
    prep.prepare('openwebtext', out, data_files=str(tmp_path / name), validation_fraction=0.25, doc_bytes=0)
    assert merge_splits(out, 0.25) == [t.encode() for t in texts]


def test_wikitext_fixture_groups_articles(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  lines = ['', ' = Alpha = \n', '', ' Alpha text . \n', ' = = Section = = \n', ' more . \n',
           ' = Beta = \n', ' Beta text . \n']
  pq.write_table(pa.table({'text': lines}), tmp_path / 'wiki.parquet')
  prep.prepare('wikitext103', tmp_path / 'out', data_files=str(tmp_path / 'wiki.parquet'),
               validation_fraction=0.0, doc_bytes=0)
  docs = read_split(tmp_path / 'out', 'train')
  assert docs == [''.join(lines[:6]).encode(), ''.join(lines[6:]).encode()]


def test_lm1b_through_tfds_mock(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=7):
    m = prep.prepare('lm1b', tmp_path / 'out', validation_fraction=0.3, doc_bytes=0)
  assert m['splits']['train']['documents'] + m['splits']['validation']['documents'] == 7
  assert all(len(d) > 0 for d in read_split(tmp_path / 'out', 'train'))


def test_text8_zip(tmp_path):
  rng = np.random.default_rng(2)
  words = [bytes(rng.integers(97, 123, rng.integers(1, 12)).astype(np.uint8)) for _ in range(30000)]
  text = b' ' + b' '.join(words)
  with zipfile.ZipFile(tmp_path / 'text8.zip', 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('text8', text)
  m = prep.prepare('text8', tmp_path / 'out', paths=str(tmp_path / 'text8.zip'), validation_fraction=0.1,
                   doc_bytes=10_000)
  docs = merge_splits(tmp_path / 'out', 0.1)
  assert b''.join(docs) == text and len(docs) > 10 and m['splits']['validation']['documents'] >= 1


def test_builtin_corpus_is_capped_and_deterministic(tmp_path):
  a = prep.prepare('builtin', tmp_path / 'a', builtin_max_bytes=300_000, validation_fraction=0.2)
  b = prep.prepare('builtin', tmp_path / 'b', builtin_max_bytes=300_000, validation_fraction=0.2)
  assert a['splits'] == b['splits']
  assert sum(s['bytes'] for s in a['splits'].values()) == 300_000
  assert a['splits']['validation']['documents'] >= 1
  first = read_split(tmp_path / 'a', 'train')[0]
  assert sources.builtin_files()[0].name == 'topics.py' and first == sources.builtin_files()[0].read_bytes()[:len(first)]


def test_gutenberg_books(tmp_path):
  books = sorted((SHARED / 'data' / 'gutenberg').glob('*.txt'))[:2]
  if not books:
    pytest.skip('../shared/data/gutenberg not present')
  m = prep.prepare('text', tmp_path / 'out', paths=','.join(map(str, books)), validation_fraction=0.1)
  assert b''.join(merge_splits(tmp_path / 'out', 0.1)) == b''.join(b.read_bytes() for b in books)
  assert m['splits']['validation']['documents'] >= 1


def test_bad_input_raises_one_line_errors(tmp_path, monkeypatch):
  cases = {
      'no such file': lambda: prep.prepare('text', tmp_path / 'o1', paths=str(tmp_path / 'missing.txt')),
      'no files match': lambda: prep.prepare('text', tmp_path / 'o2', paths=str(tmp_path / 'none*.txt')),
      'missing.zip: no such file': lambda: prep.prepare('text8', tmp_path / 'o3', paths=str(tmp_path / 'missing.zip')),
      'unknown source': lambda: prep.prepare('nope', tmp_path / 'o4'),
  }
  for expected, fn in cases.items():
    with pytest.raises(DataError, match=expected) as e:
      fn()
    assert '\n' not in str(e.value)
  locked = tmp_path / 'locked'
  locked.mkdir()
  real_access = os.access  # root reads any directory: simulate the permission check failing
  monkeypatch.setattr(sources.os, 'access', lambda p, m: False if Path(p) == locked else real_access(p, m))
  with pytest.raises(DataError, match='cannot read directory'):
    prep.prepare('text', tmp_path / 'o5', paths=str(locked))
  # A manifest of another format version.
  write_files(tmp_path / 'in', [b'abc'])
  prep.prepare('text', tmp_path / 'old', paths=str(tmp_path / 'in'), validation_fraction=0.0)
  man = json.loads((tmp_path / 'old' / mf.MANIFEST).read_text())
  man['format_version'] = 999
  (tmp_path / 'old' / mf.MANIFEST).write_text(json.dumps(man))
  with pytest.raises(DataError, match='format version 999'):
    mf.read_manifest(tmp_path / 'old')
  with pytest.raises(DataError, match='no manifest'):
    mf.read_manifest(tmp_path / 'in')


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
  res = subprocess.run([sys.executable, '-m', 'data_prep.prepare', '--source=text',
                        f'--paths={tmp_path}/missing', f'--out={tmp_path}/out'],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
  assert res.returncode != 0
  assert res.stderr.strip().splitlines() == [f'error: {tmp_path}/missing: no such file or directory']

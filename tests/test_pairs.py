"""Pairs: every pair source's loader on local fixtures, the split rule, resume,
the pair manifest format, and the batch layout / truncation / resume of
`bltdiff.data.pair_batches`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from bltdiff import vocab
from bltdiff.data import pair_batches
from bltdiff.data.packing import BOUNDARY_ENTROPY
from bltdiff.data.pipeline import DocumentSource
from bltdiff.errors import ConfigError
from data_prep import manifest as mf
from data_prep import pair_sources
from data_prep import writer as prep
from data_prep.errors import DataError

REPO = Path(__file__).resolve().parents[1]
WORDS = 'the of and to in is was that for it with as his on be at by diffusion patch byte latent'.split()


def read_pairs(directory, split) -> list[tuple[bytes, bytes]]:
  """A split's pairs in record order, decoded independently of PairSource."""
  from array_record.python.array_record_data_source import ArrayRecordDataSource
  paths = mf.shard_paths(directory, mf.read_manifest(directory, 'pairs'), split)
  if not paths:
    return []
  records = ArrayRecordDataSource(paths)
  out = []
  for i in range(len(records)):
    r = records[i]
    n = int.from_bytes(r[:4], 'little')  # the documented header: uint32 LE source length
    out.append((r[4:4 + n], r[4 + n:]))
  return out


def merge_pair_splits(directory, fraction) -> list[tuple[bytes, bytes]]:
  """Pair datasets (one pair = one split unit): the stream order back from both splits."""
  train, val = iter(read_pairs(directory, 'train')), iter(read_pairs(directory, 'validation'))
  n = sum(s['pairs'] for s in mf.read_manifest(directory, 'pairs')['splits'].values())
  return [next(val) if prep.is_validation(i, fraction) else next(train) for i in range(n)]


def word_docs(n, seed=0, max_words=120) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return [' '.join(rng.choice(WORDS, rng.integers(0, max_words))).encode() for _ in range(n)]


def write_files(root: Path, docs) -> str:
  root.mkdir(parents=True, exist_ok=True)
  for i, d in enumerate(docs):
    (root / f'doc{i:03d}.txt').write_bytes(d)
  return str(root)


# --- passages -------------------------------------------------------------------


def test_passages_by_hand():
  # 'aaa bbb ccc ddd' (15 bytes), passage_bytes 8: the first window is bytes
  # [0, 8); its last whitespace in the second half [4, 8) is the space at 7, so
  # the first passage is bytes 0..7 = 'aaa bbb '; the remaining 7 bytes fit.
  assert pair_sources.passage_pairs(b'aaa bbb ccc ddd', 8) == [(b'aaa bbb ', b'ccc ddd')]
  # No whitespace at all: cut hard every 8 bytes.
  assert pair_sources.passages(b'x' * 20, 8) == [b'x' * 8, b'x' * 8, b'x' * 4]
  # Whitespace only in the first half (the space at 1 < 4): cut hard at 8.
  assert pair_sources.passages(b'a bbbbbbbbbbbb', 8) == [b'a bbbbbb', b'bbbbbb']
  # A tab (or newline) is whitespace too: the tab at 5 ends the first passage.
  assert pair_sources.passages(b'aaaaa\tbbbbbbb', 8) == [b'aaaaa\t', b'bbbbbbb']
  # One passage (or an empty document): no pair.
  assert pair_sources.passage_pairs(b'short', 8) == [] and pair_sources.passage_pairs(b'', 8) == []


def test_passages_rejoin_and_chain():
  for doc in word_docs(30, seed=1, max_words=400):
    parts = pair_sources.passages(doc, 50)
    assert b''.join(parts) == doc and all(len(p) <= 50 for p in parts)
    assert all(p[-1:] == b' ' for p in parts[:-1])  # words are <= 9 bytes: always a space in reach
    pairs = pair_sources.passage_pairs(doc, 50)
    assert len(pairs) == len(parts) - 1
    assert all(pairs[k][1] == pairs[k + 1][0] for k in range(len(pairs) - 1))


def test_passage_split_holds_documents_together_as_text_does(tmp_path):
  """Passage pairs of a text corpus: a document's pairs all go to one split, and
  the held-out documents are those of a text preparation with the same parameters."""
  docs = word_docs(40, seed=2)
  paths = write_files(tmp_path / 'in', docs)
  kwargs = dict(paths=paths, validation_fraction=0.2, doc_bytes=0, shard_bytes=3000)
  m = prep.prepare('text', tmp_path / 'pairs', data_format='pairs', passage_bytes=60, **kwargs)
  prep.prepare('text', tmp_path / 'text', **kwargs)
  for split in mf.SPLITS:
    text_docs = [DocumentSource(str(tmp_path / 'text'), split)[i]['tokens'].tobytes()
                 for i in range(mf.read_manifest(tmp_path / 'text')['splits'][split]['documents'])]
    expected = [p for d in text_docs for p in pair_sources.passage_pairs(d, 60)]
    assert read_pairs(tmp_path / 'pairs', split) == expected and expected
    assert m['splits'][split]['pairs'] == len(expected)
  assert len(m['splits']['train']['shards']) > 1
  assert m['format_version'] == mf.PAIRS_FORMAT_VERSION and m['format'] == 'pairs'
  assert m['params']['passage_bytes'] == 60 and m['params']['format'] == 'pairs'


def test_passages_of_the_builtin_corpus_are_deterministic(tmp_path):
  a = prep.prepare('builtin', tmp_path / 'a', data_format='pairs', builtin_max_bytes=200_000,
                   doc_bytes=8192, passage_bytes=256, validation_fraction=0.1)
  b = prep.prepare('builtin', tmp_path / 'b', data_format='pairs', builtin_max_bytes=200_000,
                   doc_bytes=8192, passage_bytes=256, validation_fraction=0.1)
  assert a['splits'] == b['splits'] and a['splits']['validation']['pairs'] > 0
  assert all(len(s) <= 256 and len(t) <= 256 for s, t in read_pairs(tmp_path / 'a', 'train'))


# --- pair datasets on local fixtures ------------------------------------------


PAIRS = [('Article one.\nSecond line.', 'Highlight one.\nHighlight two.'), ('', 'empty source'),
         ('Ünïcödé ✓ source', ''), ('x' * 3000, 'long source, short target')]


def write_parquet(path, columns: dict):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize('source,columns', [('cnn_dailymail', ('article', 'highlights')),
                                            ('xsum', ('document', 'summary')),
                                            ('writingprompts', ('prompt', 'story'))])
@pytest.mark.parametrize('ext', ['parquet', 'jsonl'])
def test_pair_datasets_from_local_files(tmp_path, source, columns, ext):
  src_col, tgt_col = columns
  path = tmp_path / f'data.{ext}'
  if ext == 'parquet':
    write_parquet(path, {src_col: [s for s, _ in PAIRS], tgt_col: [t for _, t in PAIRS], 'id': list('abcd')})
  else:
    path.write_text(''.join(json.dumps({src_col: s, tgt_col: t, 'id': 'x'}) + '\n' for s, t in PAIRS))
  m = prep.prepare(source, tmp_path / 'out', data_format='pairs', data_files=str(path), validation_fraction=0.25)
  assert merge_pair_splits(tmp_path / 'out', 0.25) == [(s.encode(), t.encode()) for s, t in PAIRS]
  assert m['splits']['validation']['pairs'] == 1  # floor(4 * 0.25): pair 3
  assert read_pairs(tmp_path / 'out', 'validation') == [(PAIRS[3][0].encode(), PAIRS[3][1].encode())]
  assert m['params']['passage_bytes'] is None


def test_pair_dataset_without_its_columns_is_a_one_line_error(tmp_path):
  write_parquet(tmp_path / 'x.parquet', {'document': ['d'], 'text': ['t']})
  with pytest.raises(DataError, match='no `summary` column') as e:
    prep.prepare('xsum', tmp_path / 'out', data_format='pairs', data_files=str(tmp_path / 'x.parquet'))
  assert '\n' not in str(e.value)


def test_hub_ids_and_revisions(tmp_path, monkeypatch):
  """Without data_files the loaders stream the documented hub datasets."""
  import datasets
  calls = []
  tables = {'EdinburghNLP/xsum': {'document': ['doc'], 'summary': ['sum'], 'id': ['1']},
            'euclaise/writingprompts': {'prompt': ['[ WP ] p'], 'story': ['s <newline> t']}}

  def fake_load_dataset(path, name=None, *, split, streaming, revision=None):
    calls.append((path, name, split, streaming, revision))
    return datasets.Dataset.from_dict(tables[path]).to_iterable_dataset()

  monkeypatch.setattr(datasets, 'load_dataset', fake_load_dataset)
  assert list(pair_sources.xsum_pairs(split='test')) == [(b'doc', b'sum')]
  assert list(pair_sources.writingprompts_pairs(split='validation')) == [(b'[ WP ] p', b's <newline> t')]
  assert calls == [('EdinburghNLP/xsum', None, 'test', True, 'refs/convert/parquet'),
                   ('euclaise/writingprompts', None, 'validation', True, None)]


def test_cnn_dailymail_through_tfds_mock(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  examples = [{'article': a, 'highlights': h, 'id': str(i), 'publisher': 'cnn'} for i, (a, h) in enumerate(PAIRS)]
  asked = []

  def as_data_source(builder, split, **kwargs):  # stands in for the prepared array_record files
    asked.append((builder.name, split))
    return [{k: v.encode() for k, v in e.items()} for e in examples]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    prep.prepare('cnn_dailymail', tmp_path / 'out', data_format='pairs', source_split='validation',
                 validation_fraction=0.25)
  assert asked == [('cnn_dailymail', 'validation')]
  assert merge_pair_splits(tmp_path / 'out', 0.25) == [(a.encode(), h.encode()) for a, h in PAIRS]
  with tfds.testing.mock_data(num_examples=5):  # TFDS's own random examples of the real features
    m = prep.prepare('cnn_dailymail', tmp_path / 'random', data_format='pairs', validation_fraction=0.0)
  assert m['splits']['train']['pairs'] == 5


# --- split, resume, format ------------------------------------------------------


def test_killed_pair_prepare_resumes_without_redoing_shards(tmp_path, monkeypatch):
  paths = write_files(tmp_path / 'in', word_docs(40, seed=3, max_words=200))
  kwargs = dict(data_format='pairs', paths=paths, validation_fraction=0.1, shard_bytes=2000, doc_bytes=0,
                passage_bytes=80)
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
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob('*.arrayrecord')}
  assert sorted(mtimes) == sorted(calls[:2])

  rerun = []
  monkeypatch.setattr(prep, '_write_records', lambda path, records: (rerun.append(path.name), real_write(path, records)))
  m = prep.prepare('text', out, **kwargs)
  assert not set(rerun) & set(calls[:2])  # completed shards were not rewritten
  assert {n: (out / n).stat().st_mtime_ns for n in mtimes} == mtimes
  assert len(rerun) == sum(len(s['shards']) for s in m['splits'].values()) - 2
  assert not list(out.glob('*.tmp-*'))
  clean = prep.prepare('text', tmp_path / 'clean', **kwargs)
  assert m['splits'] == clean['splits']
  for split in mf.SPLITS:
    assert read_pairs(out, split) == read_pairs(tmp_path / 'clean', split)
  rerun.clear()
  prep.prepare('text', out, **kwargs)  # complete: nothing is written
  assert rerun == []
  with pytest.raises(DataError, match='other parameters'):  # the same --out with another passage size
    prep.prepare('text', out, **{**kwargs, 'passage_bytes': 81})


def test_pair_entropies_are_the_sources_then_the_targets(tmp_path):
  """Entropy shards of pairs: per pair, float16 entropies of the source then
  of the target, each scored as a document of its own; rows lay them out like
  the bytes, BOUNDARY_ENTROPY at the separator, END and PAD."""
  paths = write_files(tmp_path / 'in', word_docs(6, seed=3, max_words=60))
  scored = []

  def entropy_fn(docs):  # entropy of byte i of a document: i / 8 (its position in that document)
    scored.extend(docs)
    return [np.arange(len(d), dtype=np.float32) / 8 for d in docs]

  prep.prepare('text', tmp_path / 'out', data_format='pairs', paths=paths, passage_bytes=20,
               validation_fraction=0.0, entropy_fn=entropy_fn)
  assert mf.read_manifest(tmp_path / 'out', 'pairs')['has_entropies']
  source = pair_batches.PairSource(str(tmp_path / 'out'), 'train', with_entropies=True)
  for i in range(len(source)):
    pair = source[i]
    s, t = len(pair['source']), len(pair['target'])
    want = np.concatenate([np.arange(s), np.arange(t)]) / 8
    np.testing.assert_allclose(pair['entropies'].astype(np.float32), want, atol=1e-2)
  assert len(scored) == len(set(scored))  # a passage shared by two pairs is scored once
  row = pair_batches.layout_pair(source[0], seq_len=64)
  s = int(row['source_len'])
  ents = row['entropies']
  np.testing.assert_allclose(ents[:s], np.arange(s) / 8, atol=1e-2)
  assert ents[s] == BOUNDARY_ENTROPY and ents[s + 1] == 0.0
  assert (ents[row['tokens'] == vocab.PAD] == BOUNDARY_ENTROPY).all()


def test_formats_are_told_apart(tmp_path):
  paths = write_files(tmp_path / 'in', word_docs(10, seed=4))
  text = prep.prepare('text', tmp_path / 'text', paths=paths, validation_fraction=0.0, doc_bytes=0)
  prep.prepare('text', tmp_path / 'pairs', data_format='pairs', paths=paths, validation_fraction=0.0,
               doc_bytes=0, passage_bytes=40)
  # Text manifests are unchanged: version 1, no format field.
  assert text['format_version'] == 1 and 'format' not in text and 'format' not in text['params']
  raw = json.loads((tmp_path / 'pairs' / mf.MANIFEST).read_text())
  assert raw['format_version'] == 2 and raw['format'] == 'pairs'  # a version-1-only reader refuses it
  with pytest.raises(DataError, match='holds pairs data, this reader needs text'):
    DocumentSource(str(tmp_path / 'pairs'), 'train')
  with pytest.raises(DataError, match='holds text data, this reader needs pairs'):
    pair_batches.PairSource(str(tmp_path / 'text'), 'train')
  raw.pop('format')
  (tmp_path / 'pairs' / mf.MANIFEST).write_text(json.dumps(raw))
  with pytest.raises(DataError, match='format version 2'):
    mf.read_manifest(tmp_path / 'pairs', 'pairs')
  with pytest.raises(DataError, match='already holds data prepared with other parameters'):
    prep.prepare('text', tmp_path / 'text', data_format='pairs', paths=paths, validation_fraction=0.0, doc_bytes=0)


def test_pair_records_round_trip_and_bad_records():
  for s, t in [(b'', b''), (b'src', b''), (b'', b'tgt'), (bytes(range(256)), b'\x00' * 5)]:
    assert mf.decode_pair(mf.encode_pair(s, t)) == (s, t)
  assert mf.encode_pair(b'ab', b'c') == b'\x02\x00\x00\x00abc'
  with pytest.raises(DataError, match='shorter than its 4-byte header'):
    mf.decode_pair(b'\x01\x00')
  with pytest.raises(DataError, match='says 9 source bytes'):
    mf.decode_pair(b'\x09\x00\x00\x00abc')


def test_bad_pair_input_raises_one_line_errors(tmp_path):
  paths = write_files(tmp_path / 'in', [b'a b c'])
  cases = {
      'is a dataset of .source, target. pairs': lambda: prep.prepare('xsum', tmp_path / 'o1'),
      'unknown source': lambda: prep.prepare('nope', tmp_path / 'o2', data_format='pairs'),
      'unknown format': lambda: prep.prepare('text', tmp_path / 'o3', data_format='triples', paths=paths),
      'shorter than two passages': lambda: prep.prepare(
          'text', tmp_path / 'o5', data_format='pairs', paths=paths, doc_bytes=100, passage_bytes=60),
      'passage_bytes must be positive': lambda: prep.prepare(
          'text', tmp_path / 'o6', data_format='pairs', paths=paths, passage_bytes=0),
      'validation_fraction must be in': lambda: prep.prepare('text', tmp_path / 'o7', paths=paths,
                                                             validation_fraction=1.5),
  }
  for expected, fn in cases.items():
    with pytest.raises(DataError, match=expected) as e:
      fn()
    assert '\n' not in str(e.value)


def test_evaluation_only_directory(tmp_path):
  """validation_fraction=1: a dataset's own test split as an evaluation directory."""
  path = tmp_path / 'x.jsonl'
  path.write_text(''.join(json.dumps({'document': s, 'summary': t}) + '\n' for s, t in PAIRS))
  m = prep.prepare('xsum', tmp_path / 'out', data_format='pairs', data_files=str(path), validation_fraction=1.0)
  assert m['splits']['train']['pairs'] == 0 and m['splits']['validation']['pairs'] == len(PAIRS)


def test_cli_pairs(tmp_path):
  paths = write_files(tmp_path / 'in', word_docs(20, seed=5))
  ok = subprocess.run([sys.executable, '-m', 'data_prep.prepare', '--format=pairs', '--source=text',
                       f'--paths={paths}', '--passage_bytes=50', '--validation_fraction=0.1', f'--out={tmp_path}/out'],
                      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  n = mf.read_manifest(tmp_path / 'out', 'pairs')['splits']['train']['pairs']
  assert n > 0 and ok.stdout.startswith(f'train: {n} pairs, ')
  bad = subprocess.run([sys.executable, '-m', 'data_prep.prepare', '--source=xsum', f'--out={tmp_path}/o2'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines() == ['error: xsum is a dataset of (source, target) pairs: prepare it with --format=pairs']


# --- batches --------------------------------------------------------------------


def expected_row(source: bytes, target: bytes, seq_len: int, share: float, keep: str = 'end'):
  """The documented layout and truncation rule, written out directly."""
  budget = min(int(share * (seq_len - 1)), seq_len - 2)
  src = source if len(source) <= budget else (source[len(source) - budget:] if keep == 'end' else source[:budget])
  tgt = target[:seq_len - 1 - len(src)]
  end = [vocab.BOUNDARY] if len(tgt) == len(target) and len(src) + 1 + len(tgt) < seq_len else []
  tokens = list(src) + [vocab.BOUNDARY] + list(tgt) + end  # END after a target that ended in the row
  mask = [False] * (len(src) + 1) + [True] * (len(tgt) + len(end))
  pad = seq_len - len(tokens)
  return tokens + [vocab.PAD] * pad, mask + [False] * pad, len(src)


def row(source: bytes, target: bytes, seq_len=8, share=0.5, keep='end'):
  r = pair_batches.layout_pair({'source': np.frombuffer(source, np.uint8), 'target': np.frombuffer(target, np.uint8)},
                               seq_len=seq_len, max_source_share=share, source_keep=keep)
  return r['tokens'].tolist(), r['target_mask'].tolist(), int(r['source_len'])


def test_layout_by_hand():
  B, P = vocab.BOUNDARY, vocab.PAD
  d, e, f, a = ord('d'), ord('e'), ord('f'), ord('a')
  F, T = False, True
  # seq_len 8, share 0.5: the source budget is min(floor(0.5 * 7), 6) = 3 positions.
  # 'abcdef' keeps its end 'def'; the target 'XYZ' fits in the 8 - 1 - 3 = 4 left.
  # It ends inside the row, so END (a BOUNDARY, a target symbol) follows it.
  X, Y, Z = b'XYZ'
  assert row(b'abcdef', b'XYZ') == ([d, e, f, B, X, Y, Z, B], [F, F, F, F, T, T, T, T], 3)
  assert row(b'abcdef', b'XY') == ([d, e, f, B, X, Y, B, P], [F, F, F, F, T, T, T, F], 3)
  # source_keep='start' keeps the source's first 3 bytes.
  assert row(b'abcdef', b'XYZ', keep='start')[0][:4] == [a, ord('b'), ord('c'), B]
  # A long target keeps its first 4 bytes, with no END; the mask covers them and nothing else.
  assert row(b'abcdef', b'0123456789') == ([d, e, f, B] + list(b'0123'), [F] * 4 + [T] * 4, 3)
  # A short source leaves the target more room: 'a' + separator, then 6 target bytes.
  assert row(b'a', b'0123456789') == ([a, B] + list(b'012345'), [F, F] + [T] * 6, 1)
  # Empty source and target: the separator, END (the target's only symbol), then PAD.
  assert row(b'', b'') == ([B, B] + [P] * 6, [F, T] + [F] * 6, 0)
  # Share 0: no source at all; share 1: the source may take all but one target position.
  assert row(b'abc', b'XY', share=0.0) == ([B, X, Y, B] + [P] * 4, [F, T, T, T] + [F] * 4, 0)
  assert row(b'abcdefghij', b'XY', share=1.0) == (list(b'efghij') + [B, X], [F] * 7 + [T], 6)


def test_bad_layout_config_is_a_one_line_error(prepared_pairs):
  out, _ = prepared_pairs
  for kw, field in [(dict(seq_len=1), 'data.seq_len'), (dict(max_source_share=1.5), 'data.max_source_share'),
                    (dict(source_keep='middle'), 'data.source_keep')]:
    with pytest.raises(ConfigError, match=field):
      pair_batches.make_pair_iterator(pair_config(**kw), out, 'train', batch_size=2, seed=0)


def pair_config(**kw):
  base = dict(seq_len=48, max_source_share=0.6)
  base.update(kw)
  return ml_collections.ConfigDict(base)


@pytest.fixture(scope='module')
def prepared_pairs(tmp_path_factory):
  """40 random-byte pairs (empty sides and over-long sides included), in small shards."""
  root = tmp_path_factory.mktemp('pairs')
  rng = np.random.default_rng(0)
  pairs = [(rng.integers(0, 256, rng.integers(0, 70), dtype=np.uint8).tobytes(),
            rng.integers(0, 256, rng.integers(0, 50), dtype=np.uint8).tobytes()) for _ in range(40)]
  pairs[0] = (b'', b'')
  write_parquet(root / 'p.parquet', {'document': [s for s, _ in pairs], 'summary': [t for _, t in pairs]})
  prep.prepare('xsum', root / 'out', data_format='pairs', data_files=str(root / 'p.parquet'),
               validation_fraction=0.25, shard_bytes=600)
  return str(root / 'out'), pairs


def test_eval_pass_rows_follow_the_layout_and_cover_every_pair(prepared_pairs):
  out, pairs = prepared_pairs
  val = [p for i, p in enumerate(pairs) if prep.is_validation(i, 0.25)]
  it = pair_batches.make_pair_iterator(pair_config(), out, 'validation', batch_size=4, seed=0, num_epochs=1,
                                       shuffle=False)
  batches = list(it)
  assert len(batches) == -(-len(val) // 4)  # the partial last batch is kept
  for b in batches:
    assert b['tokens'].shape == (4, 48) and b['tokens'].dtype == np.int32
    assert b['target_mask'].dtype == bool and b['source_len'].dtype == np.int32
  rows = [(b['tokens'][r], b['target_mask'][r], b['source_len'][r]) for b in batches for r in range(4) if b['valid'][r]]
  assert len(rows) == len(val)
  for (tokens, mask, slen), (s, t) in zip(rows, val):
    want_tokens, want_mask, want_len = expected_row(s, t, 48, 0.6)
    assert tokens.tolist() == want_tokens and mask.tolist() == want_mask and slen == want_len
    assert tokens[slen] == vocab.BOUNDARY and not mask[:slen + 1].any()  # source, separator: never target
    kept = min(len(t), 48 - 1 - slen)
    ended = kept == len(t) and slen + 1 + kept < 48  # END written: the one non-byte target symbol
    assert (tokens[mask][:kept] < vocab.NUM_BYTES).all() and mask.sum() == kept + ended
    got, got_ended = pair_batches.target_of(tokens, slen)
    assert got.tolist() == list(t[:kept]) and got_ended == ended
  filler = batches[-1]
  n_filler = 4 * len(batches) - len(val)
  assert n_filler > 0 and not filler['valid'][4 - n_filler:].any()
  assert (filler['tokens'][4 - n_filler:] == vocab.PAD).all() and not filler['target_mask'][4 - n_filler:].any()


def test_training_stream_truncates_by_the_rule(prepared_pairs):
  out, pairs = prepared_pairs
  by_content = {}
  for s, t in pairs:
    tokens, mask, slen = expected_row(s, t, 48, 0.6, keep='start')
    by_content.setdefault(tuple(tokens), []).append((mask, slen))
  it = pair_batches.make_pair_iterator(pair_config(source_keep='start'), out, 'train', batch_size=5, seed=1)
  truncated = 0
  for _ in range(20):  # > 3 epochs of 30 pairs
    b = next(it)
    assert b['valid'].all()
    for tokens, mask, slen in zip(b['tokens'], b['target_mask'], b['source_len']):
      assert (mask.tolist(), slen) in by_content[tuple(tokens.tolist())]
      truncated += int(slen == min(int(0.6 * 47), 46))
  assert truncated > 0  # some sources were long enough to be cut


def test_resume_gives_exactly_the_next_batches(prepared_pairs):
  out, _ = prepared_pairs
  make = lambda: pair_batches.make_pair_iterator(pair_config(), out, 'train', batch_size=3, seed=7)
  it = make()
  for _ in range(13):  # 39 rows of a 30-pair split: into the second epoch
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # plain JSON, as grain's orbax handler stores it
  want = [next(it) for _ in range(25)]
  resumed = make()
  resumed.set_state(state)
  got = [next(resumed) for _ in range(25)]
  for w, g in zip(want, got):
    for key in w:
      np.testing.assert_array_equal(w[key], g[key])
  assert not np.array_equal(next(make())['tokens'], want[0]['tokens'])  # the restored state was not the start


def test_process_shards_are_disjoint_and_cover_and_epochs_reshuffle(prepared_pairs):
  out, _ = prepared_pairs
  n = mf.read_manifest(out, 'pairs')['splits']['train']['pairs']
  seen = []
  for p in range(3):
    ds = pair_batches.pair_dataset(out, 'train', seed=5, process_index=p, process_count=3, num_epochs=1)
    seen.append([(d['source'].tobytes(), d['target'].tobytes()) for d in ds])
  assert sorted(sum(seen, [])) == sorted(read_pairs(out, 'train'))
  assert sum(map(len, seen)) == n and max(map(len, seen)) - min(map(len, seen)) <= 1
  two = [d['source'].tobytes() + b'|' + d['target'].tobytes()
         for d in pair_batches.pair_dataset(out, 'train', seed=5, num_epochs=2)]
  assert sorted(two[:n]) == sorted(two[n:]) and two[:n] != two[n:]
  again = [d['source'].tobytes() + b'|' + d['target'].tobytes()
           for d in pair_batches.pair_dataset(out, 'train', seed=5, num_epochs=2)]
  assert again == two

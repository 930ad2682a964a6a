"""The Grain pipeline: exact wrap-packing, process sharding, exact resume (also through orbax)."""

import json

import grain
import numpy as np
import pytest

from bltdiff import vocab
from bltdiff.data import pipeline
from bltdiff.data.packing import BOUNDARY_ENTROPY, PackedBatchIterDataset
from data_prep import manifest as mf
from configs import common
from data_prep import writer as prep
from data_prep.errors import DataError


def config(**kw):
  return common.data_config(**dict(dict(source='text', seq_len=32, builtin_max_bytes=200_000,
                                        validation_fraction=0.1, doc_bytes=0), **kw))


def random_docs(n, seed=0, max_len=300):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, rng.integers(0, max_len), dtype=np.uint8).tobytes() for _ in range(n)]


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """60 random-byte documents (empty ones included), with entropies, in small shards."""
  root = tmp_path_factory.mktemp('prepared')
  docs = random_docs(60)
  for i, d in enumerate(docs):
    (root / 'in').mkdir(exist_ok=True)
    (root / 'in' / f'{i:03d}.bin').write_bytes(d)
  ent_fn = lambda batch: [np.frombuffer(d, np.uint8) / 64.0 for d in batch]  # entropy = byte/64
  prep.prepare('text', root / 'out', paths=str(root / 'in'), validation_fraction=0.1, shard_bytes=2000,
               doc_bytes=0, entropy_fn=ent_fn)
  return str(root / 'out'), docs


def test_wrap_packing_is_exact():
  docs = [np.frombuffer(d, np.uint8) for d in random_docs(9, seed=3)] + [np.zeros(0, np.uint8)]
  elems = [{'tokens': d, 'entropies': d.astype(np.float16)} for d in docs]
  ds = PackedBatchIterDataset(grain.MapDataset.source(elems).to_iter_dataset(), batch_size=2, seq_len=16,
                              with_entropies=True)
  batches = list(ds)
  stream = np.concatenate([np.append(d.astype(np.int32), vocab.BOUNDARY) for d in docs])
  full = len(stream) // 32 * 32  # the last partial batch is dropped
  assert len(batches) == len(stream) // 32
  got = np.concatenate([b['tokens'].reshape(-1) for b in batches])
  np.testing.assert_array_equal(got, stream[:full])
  ents = np.concatenate([b['entropies'].reshape(-1) for b in batches])
  np.testing.assert_array_equal(ents, np.where(got == vocab.BOUNDARY, BOUNDARY_ENTROPY, got))


def test_batches_shape_dtype_range_and_entropies(prepared):
  out, _ = prepared
  it = pipeline.make_iterator(config(use_entropies=True), out, 'train', batch_size=4, seed=0)
  for _ in range(5):
    b = next(it)
    assert b['tokens'].shape == (4, 32) and b['tokens'].dtype == np.int32
    assert b['entropies'].shape == (4, 32) and b['entropies'].dtype == np.float32
    assert 0 <= b['tokens'].min() and b['tokens'].max() < vocab.NUM_DATA_SYMBOLS
    t = b['tokens']
    expected = np.where(t == vocab.BOUNDARY, BOUNDARY_ENTROPY, (t / 64.0).astype(np.float16))
    np.testing.assert_array_equal(b['entropies'], expected)
  assert 'entropies' not in next(pipeline.make_iterator(config(), out, 'train', batch_size=4, seed=0))


def test_process_shards_are_disjoint_and_cover(prepared):
  out, _ = prepared
  n = mf.read_manifest(out)['splits']['train']['documents']
  seen = []
  for p in range(3):
    ds = pipeline.document_dataset(out, 'train', seed=5, process_index=p, process_count=3, num_epochs=1)
    seen.append([d['tokens'].tobytes() for d in ds])
  src = pipeline.DocumentSource(out, 'train')
  all_docs = sorted(src[i]['tokens'].tobytes() for i in range(n))
  assert sorted(sum(seen, [])) == all_docs
  assert sum(map(len, seen)) == n and max(map(len, seen)) - min(map(len, seen)) <= 1


def test_every_document_comes_back_once_per_epoch(prepared):
  out, docs = prepared
  it = pipeline.make_iterator(config(seq_len=1), out, 'validation', batch_size=1, seed=3, num_epochs=1)
  stream = np.concatenate([b['tokens'].reshape(-1) for b in it])  # seq_len 1: nothing dropped
  pieces = np.split(stream, np.flatnonzero(stream == vocab.BOUNDARY) + 1)[:-1]
  got = sorted(p[:-1].astype(np.uint8).tobytes() for p in pieces)
  expected = sorted(d for i, d in enumerate(docs) if prep.is_validation(i, 0.1))
  assert got == expected


def test_epochs_reshuffle_deterministically(prepared):
  out, _ = prepared
  order = lambda seed: [d['tokens'].tobytes() for d in pipeline.document_dataset(out, 'train', seed=seed, num_epochs=2)]
  a = order(1)
  n = len(a) // 2
  assert a == order(1) and a[:n] != a[n:] and sorted(a[:n]) == sorted(a[n:]) and a != order(2)


@pytest.mark.parametrize('workers', [0, 1])
def test_resume_gives_exactly_the_next_batches(prepared, workers):
  out, _ = prepared
  cfg = config(num_workers=workers, use_entropies=True)
  make = lambda: pipeline.make_iterator(cfg, out, 'train', batch_size=3, seed=7)
  it = make()
  for _ in range(37):  # > one epoch (train ~ 8 KB, batch 96 bytes): crosses an epoch boundary
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # plain JSON, as grain's orbax handler stores it
  want = [next(it) for _ in range(100)]
  resumed = make()
  resumed.set_state(state)
  got = [next(resumed) for _ in range(100)]
  for w, g in zip(want, got):
    np.testing.assert_array_equal(w['tokens'], g['tokens'])
    np.testing.assert_array_equal(w['entropies'], g['entropies'])
  for x in (it, resumed):
    x.close()


def test_iterator_state_roundtrips_through_orbax(prepared, tmp_path):
  """The trainer's recipe: iterator state in the same CheckpointManager step as the train state."""
  ocp = pytest.importorskip('orbax.checkpoint')
  out, _ = prepared
  make = lambda: pipeline.make_iterator(config(), out, 'train', batch_size=2, seed=0)
  it = make()
  for _ in range(11):
    next(it)
  train_state = {'step': np.asarray(11)}
  with ocp.CheckpointManager(tmp_path / 'ckpt', item_names=('state', 'data')) as mgr:
    mgr.save(11, args=ocp.args.Composite(state=ocp.args.StandardSave(train_state),
                                         data=grain.checkpoint.CheckpointSave(it)))
    mgr.wait_until_finished()
  want = [next(it)['tokens'] for _ in range(5)]
  fresh = make()  # "killed and restarted": a new iterator restored from the checkpoint
  with ocp.CheckpointManager(tmp_path / 'ckpt', item_names=('state', 'data')) as mgr:
    restored = mgr.restore(mgr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(train_state), data=grain.checkpoint.CheckpointRestore(fresh)))
  assert int(restored.state['step']) == 11
  got = [next(fresh)['tokens'] for _ in range(5)]
  for w, g in zip(want, got):
    np.testing.assert_array_equal(w, g)


def test_ensure_prepared(tmp_path):
  cfg = config(source='builtin', builtin_max_bytes=400_000, validation_fraction=0.2, doc_bytes=1 << 16)
  out = pipeline.ensure_prepared(cfg, str(tmp_path))
  assert out == str(tmp_path / 'data')
  mtime = (tmp_path / 'data' / mf.MANIFEST).stat().st_mtime_ns
  assert pipeline.ensure_prepared(cfg, str(tmp_path)) == out  # second call: already there
  assert (tmp_path / 'data' / mf.MANIFEST).stat().st_mtime_ns == mtime
  assert next(pipeline.make_iterator(cfg, out, 'validation', batch_size=2, seed=0))['tokens'].shape == (2, 32)
  assert pipeline.ensure_prepared(config(prepared_dir=out), str(tmp_path / 'other')) == out
  with pytest.raises(DataError, match='not found'):
    pipeline.ensure_prepared(config(prepared_dir=str(tmp_path / 'nope')), str(tmp_path))
  with pytest.raises(DataError, match='no such file'):
    pipeline.ensure_prepared(config(source='text', paths=str(tmp_path / 'missing.txt')), str(tmp_path / 'w2'))


def test_spread_subset_is_even_and_sized():
  from bltdiff.data import subset
  assert subset.spread_subset(10, 1.0).tolist() == list(range(10))
  assert subset.spread_subset(10, 0.5).tolist() == [0, 2, 4, 6, 8]
  assert subset.spread_subset(7, 0.01).tolist() == [0]  # at least one record
  kept = subset.spread_subset(1000, 0.3)
  assert len(kept) == 300 and len(set(kept.tolist())) == 300 and kept.max() < 1000
  # Evenly spread: every tenth of the records keeps about its share.
  assert np.all(np.abs(np.bincount(kept // 100, minlength=10) - 30) <= 1)
  with pytest.raises(ValueError, match='fraction'):
    subset.spread_subset(10, 0.0)


def test_train_fraction_trains_on_a_subset_and_keeps_validation(prepared):
  """data.train_fraction = 0.5: each epoch is the same half of the train
  documents (the spread subset), and the validation split is untouched."""
  out, docs = prepared
  def epoch_docs(split, fraction, seq_len=1):
    it = pipeline.make_iterator(config(seq_len=seq_len, train_fraction=fraction), out, split,
                                batch_size=1, seed=3, num_epochs=1)
    stream = np.concatenate([b['tokens'].reshape(-1) for b in it])
    pieces = np.split(stream, np.flatnonzero(stream == vocab.BOUNDARY) + 1)[:-1]
    return sorted(p[:-1].astype(np.uint8).tobytes() for p in pieces)
  train = [d for i, d in enumerate(docs) if not prep.is_validation(i, 0.1)]
  half = epoch_docs('train', 0.5)
  assert epoch_docs('train', 1.0) == sorted(train)
  assert len(half) == round(len(train) * 0.5) and set(half) <= set(train)
  assert epoch_docs('validation', 0.5) == epoch_docs('validation', 1.0)
  # The subset is fixed; only its order changes between epochs.
  two = [d['tokens'].tobytes() for d in pipeline.document_dataset(out, 'train', seed=1, num_epochs=2,
                                                                  fraction=0.5)]
  assert sorted(two[:len(half)]) == sorted(two[len(half):]) == half


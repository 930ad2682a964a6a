"""A run whose --workdir is a gs:// URL reads and writes every file through
etils.epath: nothing of bltdiff's or data_prep's own Python reaches it with
`open`, `os` or `pathlib`.

The bucket is fake. `epath.testing.mock_epath` (the pinned etils' test API)
routes every epath call on `gs://fake-bucket/...` to a local backing
directory (EPATH_USE_TF=false, etils' switch, so that gs:// goes to the
mockable backend and not to TensorFlow's gfile), while `open`, `io.open`
and the `os` file functions (stat, listdir, scandir, mkdir, makedirs, replace,
rename, remove, unlink, rmdir, access, open) raise for any path with `gs:` in
it. A plain `open('gs://...')` or `os.makedirs('gs://...')` in the code under
test therefore fails the run; and a native layer writing `gs:/...` relative
to the working directory would leave a `gs:` directory there, which the test
checks is absent.

Exempt, because their own C++ clients talk to GCS without Python (so no
Python-level fake can reach them; they are handed the backing directory):
- orbax's array storage, tensorstore (`ocp.CheckpointManager`'s directory):
  its gcs kvstore driver is chosen for any gs:// path;
- ArrayRecord's reader (grain's ArrayRecordDataSource): riegeli's GcsReader;
- TensorBoard event files (clu -> tf.summary): TensorFlow's GCS filesystem.
Everything else orbax does (its directories, metadata, the commit) goes
through epath and so through the fake. ArrayRecord's *writer* is local-only
and is not exempt: shards are written to a local temporary file and copied in
by epath (data_prep/shard_files.py).

What runs (small, so that it takes seconds): the data chain of a latent MDLM
with entropy patching: its entropy model, a byte AR training run with
samples, trained into WORKDIR/entropy_model; the shards with entropies; the
calibration. Then `--mode=eval` and `--mode=sample` on the entropy model's
run. (Training the latent model itself adds a minute of compiling on 2 cores
and writes no file the entropy model's run does not.)
"""

import builtins
import io
import json
import os
import types

import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from absl.testing import flagsaver
from array_record.python import array_record_data_source, array_record_module
from etils import epath
from etils.epath import testing as epath_testing

from bltdiff import commands, data_chain, generate, tensorflow_import
from configs import common
from conftest import tiny_latent_config

FAKE = 'gs://fake-bucket'
STEPS = 2
REFUSED = ('open', 'stat', 'lstat', 'listdir', 'scandir', 'mkdir', 'makedirs', 'replace', 'rename',
           'remove', 'unlink', 'rmdir', 'access')


class FakeBucket:
  """gs://fake-bucket/<key> <-> <root>/<key>."""

  def __init__(self, root):
    self.root = str(root)

  def local(self, path):
    p = os.fspath(path)
    return self.root + p[len(FAKE):] if p.startswith(FAKE) else p

  def url(self, path):
    p = os.fspath(path)
    return FAKE + p[len(self.root):] if p.startswith(self.root) else p

  def backend(self):
    """mock_epath's functions: (original, path, ...) on the backing path."""
    local = self.local

    def one(original, path, *args, **kwargs):
      return original(local(path), *args, **kwargs)

    def two(original, path, dst, *args, **kwargs):
      return original(local(path), local(dst), *args, **kwargs)

    def glob(original, pattern):  # the answer in the form the question was asked
      fake = os.fspath(pattern).startswith(FAKE)
      return [self.url(p) if fake else p for p in original(local(pattern))]

    def walk(original, top, **kwargs):
      fake = os.fspath(top).startswith(FAKE)
      for root, dirs, files in original(local(top), **kwargs):
        yield self.url(root) if fake else root, dirs, files

    return dict(open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, remove=one,
                rmtree=one, stat=one, rename=two, replace=two, copy=two, glob=glob, walk=walk)


def refuse_plain_access(monkeypatch):
  """`open` and os's file functions raise on gs: paths (epath's backend is handed
  backing paths, so it never trips this)."""
  def guard(fn, name):
    def guarded(path, *args, **kwargs):
      if isinstance(path, (str, bytes, os.PathLike)) and 'gs:' in str(os.fsdecode(path)):
        raise PermissionError(f'{name}({os.fsdecode(path)!r}) bypasses etils.epath')
      return fn(path, *args, **kwargs)
    return guarded

  monkeypatch.setattr(builtins, 'open', guard(builtins.open, 'open'))
  monkeypatch.setattr(io, 'open', builtins.open)
  for name in REFUSED:
    monkeypatch.setattr(os, name, guard(getattr(os, name), f'os.{name}'))


def redirect_native_clients(monkeypatch, bucket):
  """The three C++ GCS clients of the module docstring get the backing directory."""
  init = ocp.CheckpointManager.__init__
  monkeypatch.setattr(ocp.CheckpointManager, '__init__',
                      lambda self, directory, *a, **k: init(self, bucket.local(directory), *a, **k))
  reader = array_record_module.ArrayRecordReader
  monkeypatch.setattr(array_record_data_source, 'array_record_module', types.SimpleNamespace(
      ArrayRecordReader=lambda path, *a, **k: reader(bucket.local(path), *a, **k)))
  writers = tensorflow_import.import_quietly('clu.metric_writers')
  create = writers.create_default_writer
  monkeypatch.setattr(writers, 'create_default_writer',
                      lambda logdir, *a, **k: create(bucket.local(logdir), *a, **k))


def latent_config(corpus_glob):
  """A latent MDLM with entropy patching: its data chain trains an entropy
  model (a byte AR run, with samples) into WORKDIR/entropy_model."""
  config = tiny_latent_config(corpus_glob, **{
      'patching.mode': 'entropy', 'patching.calibrate_target_mean': 4.0})
  with config.unlocked():
    config.entropy_model = common.entropy_model_run(config.data, seq_len=32, dim=32,
                                                    num_layers=1, num_heads=2, mlp_dim=64)
    config.entropy_model.train.update(batch_size=8, num_steps=STEPS, warmup_steps=1,
                                      log_every=1, eval_every=1000, eval_batches=1,
                                      sample_every=STEPS, checkpoint_every=STEPS)
  return config


def test_a_gs_workdir_goes_through_epath_only(corpus_glob, tmp_path, monkeypatch):
  bucket = FakeBucket(tmp_path / 'bucket')
  os.makedirs(bucket.root)
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  monkeypatch.setenv('EPATH_USE_TF', 'false')
  # etils reads that switch once per process (a functools.cache), maybe
  # already by an earlier test: its cached answer is replaced for this test.
  monkeypatch.setattr(epath.gpath, '_is_tf_installed', lambda: False)
  redirect_native_clients(monkeypatch, bucket)
  latent = f'{FAKE}/runs/latent'
  run = f'{latent}/entropy_model'  # a training run of its own
  with epath_testing.mock_epath(**bucket.backend()):
    with monkeypatch.context() as refused:
      refuse_plain_access(refused)
      with pytest.raises(PermissionError, match='bypasses etils.epath'):
        open(f'{latent}/x', 'w')  # the guard is on
      # Train the entropy model (with samples), shards with entropies, calibration.
      data_chain.prepare_run_data(latent_config(corpus_glob), latent)
      metrics = commands.evaluate(run)
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      with flagsaver.flagsaver(num_samples=2, length=32, seed=1):
        tokens, _ = generate.run_sample_command(run)
    # Every file is in the bucket, seen through epath.
    expected = {latent: ['calibration.json', 'data/manifest.json', 'data/params.json',
                         'data/train-00000.arrayrecord', 'data/train-00000.entropy.arrayrecord',
                         'data/train-00000.done.json'],
                run: ['config.json', 'metrics.jsonl', f'eval_step_{STEPS}.json',
                      f'samples/step_{STEPS:07d}.txt', f'samples/step_{STEPS:07d}.npy',
                      'samples/sample.txt', 'samples/sample.bin', 'samples/sample.npy',
                      'data/manifest.json', 'data/train-00000.arrayrecord',
                      f'checkpoints/{STEPS}']}
    assert [f'{where}/{name}' for where, names in expected.items() for name in names
            if not (epath.Path(where) / name).exists()] == []
    rows = (epath.Path(run) / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(r)['step'] for r in rows if 'train_loss' in r] == list(range(1, STEPS + 1))
    with (epath.Path(run) / 'samples' / 'sample.npy').open('rb') as f:
      np.testing.assert_array_equal(np.load(f), tokens.astype(np.int16))
    assert metrics['step'] == STEPS
  # Nothing was written to a local directory named after the URL.
  assert sorted(os.listdir(cwd)) == []
  assert not list(tmp_path.glob('**/gs:'))

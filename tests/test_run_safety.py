"""A run is never damaged and every bad input gets one line (issue 14).

Each case is one command on a copy of a trained tiny run (or on a tiny
corpus), asserting its exit code, its one line, and that nothing in the run
changed. Commands run as subprocesses: `python -m bltdiff.main` with the run's
config given by a small config file that reads it from JSON."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bltdiff import calibration, commands, data_chain
from bltdiff.data import pipeline
from bltdiff.errors import ConfigError
from bltdiff.training import checkpointing
from conftest import REPO, write_corpus
from data_prep import writer

CONFIG_FILE = '''
import json
import ml_collections
def get_config():
  return ml_collections.ConfigDict(json.loads(open({path!r}).read()))
'''


def run_command(args, cwd=REPO, timeout=180):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def project_lines(stderr: str) -> list[str]:
  """What bltdiff itself printed to stderr: its 'error:'/'stopped:' lines."""
  return [l for l in stderr.splitlines() if l.startswith(('error:', 'stopped:'))]


def snapshot(workdir) -> dict:
  """Every file of a run with its content hash: 'nothing in the run changed'."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def config_file(config, directory) -> str:
  json_path = os.path.join(directory, 'config_source.json')
  with open(json_path, 'w') as f:
    f.write(config.to_json())
  path = os.path.join(directory, 'config_from_json.py')
  with open(path, 'w') as f:
    f.write(CONFIG_FILE.format(path=json_path))
  return path


@pytest.fixture(scope='module')
def trained(tmp_path_factory, corpus_glob):
  """A tiny byte MDLM run with checkpoints at steps 2 and 4; (workdir, config)."""
  from conftest import tiny_config
  config = tiny_config(corpus_glob, **{'train.checkpoint_every': 2, 'train.num_steps': 4})
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  commands.train(config, workdir)
  return workdir, config


@pytest.fixture
def run_copy(trained, tmp_path):
  workdir, config = trained
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return copy, config_file(config, str(tmp_path))


def test_train_with_other_shapes_stops_first_and_changes_nothing(run_copy):
  workdir, cfg = run_copy
  before = snapshot(workdir)
  r = run_command(['-m', 'bltdiff.main', f'--config={cfg}', f'--workdir={workdir}',
                   '--config.model.dim=64'])
  assert r.returncode == 1, r.stderr
  assert project_lines(r.stderr) == [r.stderr.strip().splitlines()[-1]]
  assert 'model.dim=32 in the run, 64 now' in r.stderr
  assert snapshot(workdir) == before


def test_a_latent_run_resumes_with_its_own_config(tmp_path, make_latent_config):
  """config.json stores tuples (model.ngram_sizes) as lists: the same config
  resumes; a changed tuple is still named."""
  config = make_latent_config()
  checkpointing.save_config(config, str(tmp_path))
  checkpointing.check_resumable(config, str(tmp_path))
  with config.unlocked():
    config.model.ngram_sizes = (3, 5)
  with pytest.raises(ConfigError, match=r'model\.ngram_sizes=\[3, 4\] in the run, \[3, 5\] now'):
    checkpointing.check_resumable(config, str(tmp_path))



def test_a_run_saved_before_the_entropy_head_resumes(tmp_path, make_latent_config,
                                                     make_config):
  """model.dec_entropy_head decides shapes: a latent run saved before it
  existed had none (False), and resumes; asking for the head is named; byte
  models, which never had the field, are untouched."""
  config = make_latent_config()
  old = make_latent_config()
  with old.unlocked():
    del old.model['dec_entropy_head']
  checkpointing.save_config(old, str(tmp_path / 'latent'))
  checkpointing.check_resumable(config, str(tmp_path / 'latent'))
  with config.unlocked():
    config.model.update(decoder_mode='diffusion', dec_entropy_head=True)
  with pytest.raises(ConfigError, match=r'model\.dec_entropy_head=False in the run, True now'):
    checkpointing.check_resumable(config, str(tmp_path / 'latent'))
  byte = make_config()
  checkpointing.save_config(byte, str(tmp_path / 'byte'))
  checkpointing.check_resumable(byte, str(tmp_path / 'byte'))

@pytest.mark.parametrize('flag, field', [('--num_samples=0', '--num_samples'),
                                         ('--length=0', '--length'),
                                         ('--num_samples=-2', '--num_samples'),
                                         ('--total_length=16', '--total_length')])
def test_sampling_flags_never_fall_back(run_copy, flag, field):
  workdir, _ = run_copy
  before = snapshot(workdir)
  r = run_command(['-m', 'bltdiff.main', '--mode=sample', f'--workdir={workdir}', flag,
                   '--length=24' if 'total' in flag else '--steps=4'])
  assert r.returncode == 1, r.stderr
  lines = project_lines(r.stderr)
  assert len(lines) == 1 and lines[0].startswith(f'error: {field}:'), r.stderr
  assert snapshot(workdir) == before


def test_unknown_field_and_device_mismatch_are_one_line_before_any_work(trained, tmp_path):
  _, config = trained
  cfg = config_file(config, str(tmp_path))
  workdir = str(tmp_path / 'new_run')
  for override, expected in (('--config.train.nonexistent=1', 'error: config.train.nonexistent:'),
                             ('--config.mesh.tensor=3', 'error: mesh:')):
    r = run_command(['-m', 'bltdiff.main', f'--config={cfg}', f'--workdir={workdir}', override])
    assert r.returncode == 1, r.stderr
    assert project_lines(r.stderr) == [r.stderr.strip().splitlines()[-1]], r.stderr
    assert project_lines(r.stderr)[0].startswith(expected), r.stderr
    assert not os.path.exists(workdir)  # no data prep, no training


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_step(run_copy):
  workdir, _ = run_copy
  ckpt = checkpointing.checkpoint_dir(workdir)
  assert sorted(os.listdir(ckpt)) == ['2', '4']
  for root, _, files in os.walk(os.path.join(ckpt, '4', 'state')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\0garbage')
  r = run_command(['-m', 'bltdiff.main', '--mode=eval', f'--workdir={workdir}'])
  assert r.returncode == 0, r.stderr
  assert json.loads(open(os.path.join(workdir, 'eval_step_2.json')).read())['step'] == 2
  warnings = [l for l in r.stderr.splitlines() if 'does not restore' in l]
  assert len(warnings) == 1 and 'step 4' in warnings[0], r.stderr
  # Training sets the damaged step aside and trains it again.
  commands.train(checkpointing.load_config(workdir), workdir)
  assert sorted(os.listdir(ckpt)) == ['2', '4']
  assert os.listdir(os.path.join(workdir, 'checkpoints_damaged')) == ['4']


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_interrupt_saves_a_checkpoint_and_resume_writes_no_duplicate_metrics(
    trained, tmp_path, signum):
  _, config = trained
  config = config.copy_and_resolve_references()
  config.train.num_steps, config.train.checkpoint_every = 100_000, 100_000
  config.train.log_every = 1
  cfg = config_file(config, str(tmp_path))
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, '-m', 'bltdiff.main', f'--config={cfg}',
                           f'--workdir={workdir}'], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 150
  while time.time() < deadline and not (os.path.exists(metrics) and
                                        len(open(metrics).readlines()) >= 3):
    assert proc.poll() is None, proc.stderr.read()
    time.sleep(0.1)
  proc.send_signal(signum)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signum, stderr
  lines = project_lines(stderr)
  assert len(lines) == 1 and lines[0].startswith('stopped: stopped by ' + signal.Signals(signum).name)
  assert 'rerun the same command to resume' in lines[0]
  steps = [int(s) for s in os.listdir(checkpointing.checkpoint_dir(workdir))]
  # The one checkpoint is the step the signal stopped, the last step logged.
  trained = [json.loads(l)['step'] for l in open(metrics) if 'train_loss' in l]
  assert len(steps) == 1 and steps[0] == trained[-1] >= 1, (steps, trained)
  # Rows logged after the checkpoint (none here, but an earlier kill can leave
  # some) are dropped on resume: simulate one, then resume for two steps.
  with open(metrics, 'a') as f:
    f.write(json.dumps({'step': steps[0] + 1, 'train_loss': 0.0}) + '\n')
  commands.train(checkpointing.load_config(workdir), workdir, stop_at_step=steps[0] + 2)
  logged = [json.loads(l)['step'] for l in open(metrics) if 'train_loss' in l]
  assert logged == sorted(set(logged)) and logged[-1] == steps[0] + 2


def test_moved_run_still_evaluates(trained, tmp_path):
  workdir, _ = trained
  moved = str(tmp_path / 'elsewhere' / 'run')
  shutil.copytree(workdir, moved)
  saved = json.loads(open(os.path.join(moved, 'config.json')).read())
  assert saved['data']['prepared_dir'] == 'data'  # relative to the run
  config = checkpointing.load_config(moved)
  assert config.data.prepared_dir == os.path.join(moved, 'data')
  assert commands.evaluate(moved)['step'] == 4


def test_data_prep_refuses_empty_splits_and_read_only_output(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'a.txt').write_text('')
  tiny = write_corpus(str(tmp_path / 'tiny'), num_docs=3)
  cases = [([f'--paths={empty}/*.txt'], 'the train and validation splits are empty'),
           ([f'--paths={tiny}'], 'the validation split is empty')]
  for i, (args, expected) in enumerate(cases):
    r = run_command(['-m', 'data_prep.prepare', '--source=text', f'--out={tmp_path}/out{i}',
                     *args])
    assert r.returncode == 2, r.stderr
    assert project_lines(r.stderr) == [r.stderr.strip().splitlines()[-1]], r.stderr
    assert expected in project_lines(r.stderr)[0], r.stderr
  read_only = tmp_path / 'read_only'
  read_only.mkdir()
  read_only.chmod(0o555)
  try:
    r = run_command(['-m', 'data_prep.prepare', '--source=text', f'--paths={tiny}',
                     f'--out={read_only}'])
    if os.access(read_only, os.W_OK):
      pytest.skip('running as a user who can write anywhere (root)')
    assert r.returncode == 2 and 'not writable' in project_lines(r.stderr)[0], r.stderr
  finally:
    read_only.chmod(0o755)


def test_calibration_reads_a_uniform_seeded_sample_and_checks_validation(tmp_path):
  corpus = write_corpus(str(tmp_path / 'corpus'), num_docs=60)
  prepared = str(tmp_path / 'prepared')
  writer.prepare('text', prepared, paths=corpus, validation_fraction=0.2)
  first = calibration.read_prepared_sample(prepared, 400, with_entropies=False, seed=0)[0]
  again = calibration.read_prepared_sample(prepared, 400, with_entropies=False, seed=0)[0]
  other = calibration.read_prepared_sample(prepared, 400, with_entropies=False, seed=1)[0]
  source = pipeline.DocumentSource(prepared, 'train', with_entropies=False)
  stored = [source[i]['tokens'] for i in range(len(source))]  # in stored order
  in_order = {bytes(t.astype(np.uint8)) for t in stored}
  assert [bytes(t.astype(np.uint8)) for t in first] == [bytes(t.astype(np.uint8)) for t in again]
  assert [len(t) for t in first] != [len(t) for t in other]
  assert {bytes(t.astype(np.uint8)) for t in first} <= in_order
  assert [len(t) for t in first] != [len(t) for t in stored[:len(first)]]  # not stored order
  from conftest import tiny_latent_config
  config = tiny_latent_config(corpus)
  config.patching.calibrate_target_mean = 3.0
  result = data_chain.calibrate_patcher(config, prepared, str(tmp_path / 'run'), False)
  assert abs(result['validation_mean_patch_bytes'] - result['mean_patch_bytes']) < 0.5
  assert json.loads(open(tmp_path / 'run' / 'calibration.json').read())['key']['prepared_dir'] \
      == prepared  # outside the run: kept absolute

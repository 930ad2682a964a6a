"""From a trained run to a model people use: the EMA of the parameters, the
inference export (bltdiff/training/export.py), `--mode=sample --checkpoint`,
and the Python API (`bltdiff.load`, bltdiff/api.py).

Two tiny runs are trained once for the module, both with an EMA: a byte MDLM,
and a latent MDLM with entropy patching (the data chain trains its entropy
model first)."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from absl.testing import flagsaver

import bltdiff
from bltdiff import commands, sharding, vocab
from bltdiff.errors import BltdiffError, ConfigError
from bltdiff.sampling.options import SamplerOptions
from bltdiff.training import checkpointing, ema, evaluation, export, state, steps
from configs import common
from conftest import REPO, tiny_config, tiny_latent_config

EMA_RATE = 0.9
STEPS = 4
PROMPT = 'The model '


@functools.lru_cache(maxsize=None)
def load(path):
  """bltdiff.load, once per directory (each load compiles its own samplers)."""
  return bltdiff.load(path)


def tree_equal(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def train_and_export(config, root):
  workdir, export_dir = str(root / 'run'), str(root / 'export')
  commands.train(config, workdir)
  commands.export(workdir, export_dir)
  return workdir, export_dir


@pytest.fixture(scope='module')
def byte_run(tmp_path_factory, corpus_glob):
  config = tiny_config(corpus_glob, **{'train.num_steps': STEPS, 'train.ema_rate': EMA_RATE,
                                       'train.eval_every': STEPS, 'train.sample_every': STEPS,
                                       'train.learning_rate': 1e-2})
  return train_and_export(config, tmp_path_factory.mktemp('byte'))


@pytest.fixture(scope='module')
def latent_run(tmp_path_factory, corpus_glob):
  config = tiny_latent_config(corpus_glob, **{
      'train.num_steps': STEPS, 'train.ema_rate': EMA_RATE, 'train.learning_rate': 1e-2,
      'patching.mode': 'entropy', 'patching.calibrate_target_mean': 4.0, 'sample.steps': 4})
  with config.unlocked():
    config.entropy_model = common.entropy_model_run(config.data, seq_len=32, dim=32,
                                                    num_layers=1, num_heads=2, mlp_dim=64)
    config.entropy_model.train.update(batch_size=8, num_steps=STEPS, warmup_steps=2,
                                      log_every=2, eval_every=STEPS, eval_batches=1,
                                      checkpoint_every=STEPS)
  return train_and_export(config, tmp_path_factory.mktemp('latent'))


@pytest.fixture(params=['byte', 'latent'])
def run(request):
  return request.getfixturevalue(f'{request.param}_run')


def sample_command(tmp_path, **overrides):
  """`--mode=sample` in process: (tokens, stats) with the given flag values."""
  from bltdiff import generate
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  values = dict(prompt=PROMPT, seed=3, num_samples=2, output=str(tmp_path / 'out' / 'sample'))
  with flagsaver.flagsaver(**values):
    return generate.run_sample_command(overrides.pop('workdir', None), **overrides)


# ---- EMA ----------------------------------------------------------------------------

def test_ema_follows_its_update_rule(make_config):
  """ema_0 = params_0 and ema_s = r ema_{s-1} + (1 - r) params_s, step by step; off = None."""
  rng = np.random.RandomState(0)
  for rate in (EMA_RATE, 0.0):
    config = make_config(**{'train.ema_rate': rate, 'train.learning_rate': 1e-2})
    run = state.setup(config)
    with sharding.activate(run.mesh):
      st = state.create_train_state(run.model, run.tx, config, run.mesh, run.shardings)
      step_fn = steps.make_train_step(run.model, run.tx, run.lr_schedule, run.mesh, run.shardings,
                                      steps.train_metric_names(run.model, config), rate)
      if rate == 0:  # off: nothing in the state or the checkpoint; inference uses params
        assert st.ema_params is None and run.abstract_state.ema_params is None
        assert ema.inference_params(st) is st.params
        continue
      expected = jax.tree.map(np.asarray, st.params)
      assert tree_equal(st.ema_params, expected)
      for _ in range(2):
        batch = {'tokens': rng.randint(0, 256, (8, 32)).astype(np.int32)}
        st, _ = step_fn(st, sharding.global_batch(batch, run.mesh))
        params = jax.tree.map(np.asarray, st.params)
        expected = jax.tree.map(lambda e, p: rate * e + (1 - rate) * p, expected, params)
      for got, want in zip(jax.tree.leaves(st.ema_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
      assert not tree_equal(st.ema_params, params)  # the average lags the parameters
      assert ema.inference_params(st) is st.ema_params


def test_eval_and_samples_of_the_run_use_the_ema(byte_run):
  workdir, _ = byte_run
  config = checkpointing.load_config(workdir)
  run = state.setup(config)
  full, step = checkpointing.restore(checkpointing.make_manager(workdir), run.abstract_state)
  assert step == STEPS and full.ema_params is not None
  written = np.load(os.path.join(workdir, 'samples', f'step_{STEPS:07d}.npy'))
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), STEPS)
  draw = lambda params: run.model.sample(params, key, SamplerOptions.from_config(config.sample),
                                         num_samples=config.sample.num_samples,
                                         length=config.data.seq_len)[0]
  np.testing.assert_array_equal(written, draw(full.ema_params))
  assert not np.array_equal(written, draw(full.params))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    logged = [row['eval_bpb'] for row in map(json.loads, f) if 'eval_bpb' in row]
  with sharding.activate(run.mesh):
    eval_step = steps.make_eval_step(run.model, run.mesh, run.shardings.params)
    bpb = lambda params: evaluation.evaluate(run.model, params, config, config.data.prepared_dir,
                                             run.mesh, eval_step)['eval_bpb']
    assert logged == [pytest.approx(bpb(full.ema_params), rel=1e-6)]
    assert bpb(full.params) != pytest.approx(logged[0], rel=1e-6)


# ---- the export -----------------------------------------------------------------------

def test_export_samples_the_same_bytes_as_the_run(run, tmp_path):
  workdir, export_dir = run
  from_run, _ = sample_command(tmp_path, workdir=workdir)
  from_export, stats = sample_command(tmp_path, checkpoint=export_dir)
  np.testing.assert_array_equal(from_export, from_run)
  assert all(row[:len(PROMPT)].tolist() == list(PROMPT.encode()) for row in from_export)
  assert stats['latent_calls'] > 0
  api = load(export_dir).sample(prompt=PROMPT, seed=3, num_samples=2)
  np.testing.assert_array_equal(api.tokens, from_run)
  assert all(t.startswith(PROMPT) for t in api.texts)
  other_seed = load(export_dir).sample(prompt=PROMPT, seed=4, num_samples=2).tokens
  assert not np.array_equal(other_seed, from_run)


def test_export_holds_the_ema_and_no_optimizer_state(run, tmp_path):
  workdir, export_dir = run
  metadata = export.read_metadata(export_dir)
  entropy = metadata['entropy_model'] is not None
  assert metadata['weights'] == 'ema' and metadata['format_version'] == export.FORMAT_VERSION
  assert entropy == (metadata['config']['model']['kind'] == 'latent_mdlm')
  items = {d for d in os.listdir(export_dir) if os.path.isdir(os.path.join(export_dir, d))}
  assert items == ({'params', 'entropy_params'} if entropy else {'params'})
  assert not [v for v in strings(metadata) if os.path.isabs(v) or 'pytest-' in v]  # portable
  config = checkpointing.load_config(workdir)
  setup = state.setup(config)
  full, _ = checkpointing.restore(checkpointing.make_manager(workdir), setup.abstract_state)
  loaded = export.load_export(export_dir)
  assert jax.tree.structure(loaded.params) == jax.tree.structure(full.params)
  assert tree_equal(loaded.params, full.ema_params)
  checkpoint = os.path.join(checkpointing.checkpoint_dir(workdir), str(STEPS))
  assert du(export_dir) < 0.5 * du(checkpoint), (du(export_dir), du(checkpoint))
  # bfloat16: stored as bfloat16 (the entropy model stays float32), loaded as float32.
  half = str(tmp_path / 'bf16')
  commands.export(workdir, half, 'bfloat16')
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      **{item: ocp.StandardCheckpointHandler() for item in export.ITEMS})) as checkpointer:
    stored = checkpointer.metadata(half).item_metadata
  dtypes = lambda item: {m.dtype for m in jax.tree.leaves(stored[item].tree)}
  assert dtypes('params') == {np.dtype('bfloat16')}
  if entropy:
    assert dtypes('entropy_params') == {np.dtype('float32')}
  assert du(os.path.join(half, 'params')) < du(os.path.join(export_dir, 'params'))
  rounded = export.load_export(half).params
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(rounded))
  bf16 = jax.tree.map(lambda x: np.asarray(x.astype('bfloat16').astype('float32')),
                      full.ema_params)
  assert tree_equal(rounded, bf16)


def strings(tree):
  if isinstance(tree, dict):
    return [s for v in tree.values() for s in strings(v)]
  if isinstance(tree, list):
    return [s for v in tree for s in strings(v)]
  return [tree] if isinstance(tree, str) else []


def du(path) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def test_moved_export_samples_with_a_prompt_without_the_run(latent_run, tmp_path):
  """The export copied elsewhere, the training run (and its entropy model)
  gone: the command still samples with a prompt, the same bytes as before."""
  workdir, export_dir = latent_run
  expected = load(export_dir).sample(prompt=PROMPT, seed=3, num_samples=2).tokens
  moved = str(tmp_path / 'elsewhere' / 'model')
  shutil.copytree(export_dir, moved)
  hidden = workdir + '.hidden'
  os.rename(workdir, hidden)
  try:
    result = subprocess.run(
        [sys.executable, '-m', 'bltdiff.main', '--mode=sample', f'--checkpoint={moved}',
         f'--prompt={PROMPT}', '--seed=3', '--num_samples=2', '--output=out/s'],
        cwd=str(tmp_path / 'elsewhere'), capture_output=True, text=True, timeout=600,
        env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO))
  finally:
    os.rename(hidden, workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_array_equal(np.load(tmp_path / 'elsewhere' / 'out' / 's.npy'), expected)


def test_wrong_or_partial_export_is_one_clear_line(byte_run, tmp_path):
  workdir, export_dir = byte_run

  def copy(name):
    path = str(tmp_path / name)
    shutil.copytree(export_dir, path)
    return path

  no_params = copy('no_params')
  shutil.rmtree(os.path.join(no_params, 'params'))
  emptied = copy('emptied')
  shutil.rmtree(os.path.join(emptied, 'params'))
  os.makedirs(os.path.join(emptied, 'params'))
  newer = copy('newer')
  meta_file = os.path.join(newer, '_CHECKPOINT_METADATA')
  with open(meta_file) as f:
    meta = json.load(f)
  meta['custom_metadata']['format_version'] = export.FORMAT_VERSION + 1
  with open(meta_file, 'w') as f:
    json.dump(meta, f)
  os.makedirs(tmp_path / 'empty')
  cases = {str(tmp_path / 'missing'): 'no such export directory',
           str(tmp_path / 'empty'): 'not a bltdiff export',
           workdir: 'it is a training run',
           no_params: 'incomplete export: params/ is missing',
           emptied: 'params/ does not restore',
           newer: f'export format version {export.FORMAT_VERSION + 1}, but this bltdiff reads '
                  f'version {export.FORMAT_VERSION}'}
  for path, message in cases.items():
    with pytest.raises(BltdiffError) as err:
      export.load_export(path)
    assert message in str(err.value) and '\n' not in str(err.value), str(err.value)
  # On the command line: the error is the last line of stderr, and the only one of bltdiff's.
  result = subprocess.run(
      [sys.executable, '-m', 'bltdiff.main', '--mode=sample', f'--checkpoint={newer}'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode != 0 and lines[-1].startswith(f'error: {newer}: export format version')
  assert [l for l in lines if l.startswith('error') or 'Traceback' in l] == [lines[-1]]


# ---- the Python API -------------------------------------------------------------------

def test_bits_per_byte_is_the_models_likelihood(latent_run):
  """Byte AR (the latent run's entropy model, loaded from its run directory):
  exact, chunk by chunk over rows of data.seq_len bytes."""
  workdir, _ = latent_run
  model = load(os.path.join(workdir, 'entropy_model'))
  data = ('The patch byte model is the entropy of a sample. ' * 2).encode()  # 100 bytes
  n, nats = int(model.config.data.seq_len), 0.0
  for start in range(0, len(data), n):
    row = np.frombuffer(data[start:start + n], np.uint8).astype(np.int32)[None]
    logp = jax.nn.log_softmax(model.model.logits(model.params, row), axis=-1)
    nats -= float(np.take_along_axis(np.asarray(logp), row[..., None], -1).sum())
  assert model.bits_per_byte(data) == pytest.approx(nats / len(data) / np.log(2), rel=1e-5)


def test_bits_per_byte_of_diffusion_models(run):
  _, export_dir = run
  model = load(export_dir)
  in_domain = 'The of and to in is was that for it with as his on be at by had not. ' * 2
  noise = bytes(np.random.RandomState(0).randint(0, 256, len(in_domain)).astype(np.uint8))
  bpb = model.bits_per_byte(in_domain, t_samples=8)
  assert bpb == model.bits_per_byte(in_domain, t_samples=8)  # seeded
  assert 0 < bpb < model.bits_per_byte(noise, t_samples=8)
  assert model.bits_per_byte(in_domain, t_samples=8, seed=1) != bpb  # a Monte Carlo bound


def test_encode_and_decode_latent_patches(latent_run):
  _, export_dir = latent_run
  model = load(export_dir)
  text = 'The model is a patch.'
  enc = model.encode(text)
  k, dim = len(enc.patches), model.config.model.dec_dim
  assert b''.join(enc.patches) == text.encode() and k > 1
  assert enc.latents.shape == (k, dim)
  hidden = model.encode(text, masked=[1])
  assert not np.allclose(hidden.latents[1], enc.latents[1])
  drawn = model.decode(hidden.latents, seed=0)
  assert len(drawn) == k and drawn == model.decode(hidden.latents, seed=0)
  max_len = model.config.patching.max_patch_len
  assert all(1 <= len(p) <= max_len for p in drawn)
  with pytest.raises(ConfigError, match='^latents: expected shape'):
    model.decode(enc.latents[:, :-1])


def test_api_sample_options_and_byte_models(byte_run):
  _, export_dir = byte_run
  model = load(export_dir)
  out = model.sample(num_samples=1, length=24, prompt=b'The ', suffix=' end.', gap=12,
                     sampler='ancestral', steps=4, seed=0)
  assert out.raw[0].startswith(b'The ') and out.raw[0].endswith(b' end.')
  assert out.tokens.shape == (1, 4 + 12 + 5) and np.all(out.tokens < vocab.NUM_DATA_SYMBOLS)
  with pytest.raises(ConfigError, match='^stepz: not a sampler option'):
    model.sample(stepz=4)
  with pytest.raises(ConfigError, match='^length: 99 exceeds the model context'):
    model.sample(length=99)
  for call in (lambda: model.encode('text'), lambda: model.decode(np.zeros((1, 4)))):
    with pytest.raises(BltdiffError, match='^(en|de)code: a byte_mdlm model has no latent space'):
      call()

"""Shared fixtures: a tiny corpus and tiny configs, so every test compiles small."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# XLA's persistent compilation cache: many tests compile the same tiny
# programs again (a resumed run, a second command on the same config), and
# compiling, not running, is most of their time. Keyed by the program and
# the jax version, so a stale entry is never used for another program.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.environ.get('TMPDIR', '/tmp'), f'bltdiff-test-jax-cache-{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
# XLA's CPU backend optimizations (LLVM's) cost more compile time than they save
# on tiny test models, and compiling is most of a test's time (about a quarter
# less at level 0). The level changes code generation, not what is computed.
# Subprocesses (the mesh, multiprocess and notebook tests) inherit it.
FAST_COMPILE = '--xla_backend_optimization_level=0'
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(filter(None, [os.environ.get('XLA_FLAGS'), FAST_COMPILE]))

import ml_collections
import numpy as np
import pytest

from configs import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), 'shared')


def write_corpus(directory, num_docs: int = 40, seed: int = 0) -> str:
  """Deterministic small text corpus (one document per file) -> glob."""
  rng = np.random.RandomState(seed)
  words = ('the of and to in is was that for it with as his on be at by had not are but from '
           'diffusion patch byte latent model entropy sample mask token step').split()
  os.makedirs(directory, exist_ok=True)
  for i in range(num_docs):
    sentences = []
    for _ in range(rng.randint(3, 12)):
      sentence = ' '.join(rng.choice(words, rng.randint(4, 12)))
      sentences.append(sentence.capitalize() + '.')
    with open(os.path.join(directory, f'doc{i:03d}.txt'), 'w') as f:
      f.write(' '.join(sentences) + '\n')
  return os.path.join(directory, '*.txt')


TINY_LATENT_MODEL = dict(dim=32, num_layers=1, num_heads=2, mlp_dim=64, enc_dim=16,
                         enc_layers=1, enc_heads=2, enc_mlp_dim=32, pool_queries=2,
                         ngram_sizes=(3, 4), hash_buckets=64, dec_dim=16, dec_layers=1,
                         dec_heads=2, dec_mlp_dim=32)


def tiny_config(corpus_glob: str, **overrides) -> ml_collections.ConfigDict:
  """A byte MDLM run on the test corpus, small enough to compile in seconds
  (configs.common's sections; `overrides` maps 'section.field' to values)."""
  c = common.run(
      model=common.byte_model('byte_mdlm', dim=32, num_layers=1, num_heads=2, mlp_dim=64),
      data=common.data_config(source='text', paths=corpus_glob, seq_len=32,
                              builtin_max_bytes=1 << 20, validation_fraction=0.1),
      train=common.train_config(batch_size=8, num_steps=4, learning_rate=1e-3,
                                warmup_steps=2, log_every=2, eval_every=1000, eval_batches=2,
                                eval_t_samples=1, sample_every=1000, checkpoint_every=1000,
                                keep_checkpoints=3),
      sample=common.sample_config(steps=8, num_samples=2))
  return apply_overrides(c, overrides)


def tiny_latent_config(corpus_glob: str, **overrides) -> ml_collections.ConfigDict:
  """A latent MDLM run on the test corpus with static patching (no entropy model)."""
  c = tiny_config(corpus_glob)
  with c.unlocked():
    c.model = common.latent_model(**TINY_LATENT_MODEL)
    c.patching = common.patching_config(mode='static', static_size=4, max_patch_len=6,
                                        num_slots=12, calibrate_target_mean=0.0)
  return apply_overrides(c, overrides)


def apply_overrides(c, overrides: dict):
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


# The slowest files first (measured with --durations): CI runs `-n 2 --dist
# loadfile`, which hands whole files to the two workers in collection order, so
# a long file collected last would leave the other worker idle at the end.
SLOWEST_FIRST = ('test_latent_decoding.py', 'test_distillation.py', 'test_latent_samplers.py',
                 'test_notebook.py', 'test_diffusion_decoder.py', 'test_export.py',
                 'test_sampling_cost.py', 'test_mesh.py', 'test_latent_mdlm.py',
                 'test_multiprocess.py', 'test_conditional.py')


def pytest_collection_modifyitems(config, items):
  """Files in SLOWEST_FIRST order, then the rest as collected (a stable
  sort: the order within a file is kept)."""
  del config
  rank = lambda item: (SLOWEST_FIRST.index(item.path.name) if item.path.name in SLOWEST_FIRST
                       else len(SLOWEST_FIRST))
  items.sort(key=rank)


@pytest.fixture(scope='session')
def corpus_glob(tmp_path_factory):
  return write_corpus(str(tmp_path_factory.mktemp('corpus')))


@pytest.fixture
def make_config(corpus_glob):
  return lambda **overrides: tiny_config(corpus_glob, **overrides)


@pytest.fixture
def make_latent_config(corpus_glob):
  return lambda **overrides: tiny_latent_config(corpus_glob, **overrides)

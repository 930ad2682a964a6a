"""Shared fixtures: a tiny corpus and tiny configs, so every test compiles small."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import ml_collections
import numpy as np
import pytest

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


def tiny_config(corpus_glob: str, **overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      kind='byte_mdlm', dim=32, num_layers=1, num_heads=2, mlp_dim=64, dropout=0.0,
      schedule='loglinear', dtype='float32', attention_window=0))
  c.data = ml_collections.ConfigDict(dict(
      source='text', paths=corpus_glob, prepared_dir='', seq_len=32, num_workers=0,
      builtin_max_bytes=1 << 20, validation_fraction=0.1, use_entropies=False))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=8, num_steps=4, learning_rate=1e-3, warmup_steps=2, weight_decay=0.01,
      grad_clip=1.0, final_lr_fraction=0.1, grad_accum_steps=1, log_every=2, eval_every=1000,
      eval_batches=2, eval_t_samples=1, sample_every=1000, checkpoint_every=1000,
      keep_checkpoints=3, peak_flops_per_device=0.0))
  c.sample = ml_collections.ConfigDict(dict(
      sampler='cached', steps=8, num_samples=2, top_p=1.0, block_length=0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


@pytest.fixture(scope='session')
def corpus_glob(tmp_path_factory):
  return write_corpus(str(tmp_path_factory.mktemp('corpus')))


@pytest.fixture
def make_config(corpus_glob):
  return lambda **overrides: tiny_config(corpus_glob, **overrides)

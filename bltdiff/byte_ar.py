"""Byte AR: a causal byte transformer. Exact bits per byte; cached decoding.

The same model class is the BLT entropy model and the sample-quality evaluator.
A BOUNDARY symbol starts a new document: attention never crosses it, so what a
model says about one document does not depend on its neighbours in a packed
sequence. An optional sliding window bounds the context (BLT's entropy model).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import layers, samplers, vocab
from bltdiff.errors import ConfigError


def shift_right(tokens):
  """[batch, n] -> inputs [batch, n]: BOUNDARY (start symbol) then tokens[:, :-1]."""
  start = jnp.full_like(tokens[:, :1], vocab.BOUNDARY)
  return jnp.concatenate([start, tokens[:, :-1]], axis=1)


def document_segments(inputs):
  """Segment ids [batch, n] (from 1): each BOUNDARY input opens a new document."""
  return jnp.cumsum((inputs == vocab.BOUNDARY).astype(jnp.int32), axis=1)


class ByteAR(nn.Module):
  """tokens [batch, n] -> logits [batch, n, NUM_DATA_SYMBOLS], where logits[:, t]
  is the distribution of tokens[:, t] given tokens[:, <t] (a start symbol is
  prepended internally). With decode=True, call it on one input position at a
  time via `decode_step`."""
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  attention_window: int = 0
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  decode: bool = False

  def setup(self):
    self.embed = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype)
    self.transformer = layers.Transformer(
        self.num_layers, self.num_heads, self.mlp_dim, self.dtype, decode=self.decode,
        dropout=self.dropout, window=self.attention_window)
    self.head = layers.readout(vocab.NUM_DATA_SYMBOLS)

  def __call__(self, tokens, deterministic: bool = True):
    inputs = shift_right(tokens)
    segments = document_segments(inputs)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    mask = layers.attention_mask(segments, segments, causal=True, window=self.attention_window)
    h = self.transformer(self.embed(inputs), mask, positions, segments=segments,
                         deterministic=deterministic)
    return self.head(h)

  def decode_step(self, inputs, positions, segments):
    """One cached step: inputs, positions, segments int [batch, 1] -> logits [batch, 1, V]."""
    h = self.transformer(self.embed(inputs), None, positions, segments=segments)
    return self.head(h)


def make_byte_ar(model_config, decode: bool = False) -> ByteAR:
  return ByteAR(dim=model_config.dim, num_layers=model_config.num_layers,
                num_heads=model_config.num_heads, mlp_dim=model_config.mlp_dim,
                attention_window=model_config.get('attention_window', 0),
                dropout=model_config.get('dropout', 0.0),
                dtype=jnp.dtype(model_config.get('dtype', 'float32')), decode=decode)


def sequence_nll(logits, tokens):
  """Exact −log p(tokens) per position, in nats: [batch, n]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


class ByteARModel:
  """What the trainer and samplers need of byte AR; holds no parameters."""

  def __init__(self, model_config):
    self.config = model_config
    self.net = make_byte_ar(model_config)
    self.decoder = make_byte_ar(model_config, decode=True)

  def init(self, key, batch):
    return self.net.init({'params': key}, batch['tokens'][:1])['params']

  def logits(self, params, tokens):
    return self.net.apply({'params': params}, tokens)

  def loss(self, params, batch, key, train: bool = True):
    tokens = batch['tokens']
    rngs = {'dropout': key} if train else None
    logits = self.net.apply({'params': params}, tokens, deterministic=not train, rngs=rngs)
    loss = jnp.mean(sequence_nll(logits, tokens))
    return loss, {'loss': loss, 'bpb': loss / math.log(2.0)}

  stochastic_loss = False  # exact likelihood: one eval pass is enough
  samplers = ('cached', 'ancestral')

  def sample(self, params, key, *, num_samples: int, length: int, steps: int | None = None,
             sampler: str = 'cached', top_p: float = 1.0, prefix=None, **options):
    """Draws [num_samples, length] tokens left to right: 'cached' uses the
    key/value cache, 'ancestral' recomputes the whole prefix at every position
    (same output, for checking). `steps` and the diffusion samplers' options
    are ignored: AR takes `length` calls."""
    del steps, options
    if sampler not in self.samplers:
      raise ConfigError(f'sample.sampler: byte_ar has samplers {self.samplers}, got {sampler!r}')
    cached = sampler == 'cached'
    prefix = jnp.zeros((0,), jnp.int32) if prefix is None else jnp.asarray(prefix, jnp.int32)
    run = _ar_sampler(self, num_samples, length, int(prefix.shape[0]), cached, top_p)
    tokens = samplers.run_with_x64(run, params, key, prefix)
    return np.asarray(tokens), {'latent_calls': length - int(prefix.shape[0]), 'steps': length}


@functools.lru_cache(maxsize=32)
def _ar_sampler(model: ByteARModel, num_samples: int, length: int, prefix_len: int,
                cached: bool, top_p: float):
  """A jitted (params, key, prefix [prefix_len]) -> tokens [num_samples, length]."""
  shape = (num_samples, length)

  def draw(key, logits):
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return samplers.gumbel_argmax(key, samplers.top_p_filter(lp, top_p))

  @jax.jit
  def run_cached(params, key, prefix):
    cache = model.decoder.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.int32))['cache']
    tokens = jnp.zeros(shape, jnp.int32).at[:, :prefix_len].set(prefix[None])

    def step(carry, i):
      tokens, cache, segment = carry
      prev = jnp.where(i == 0, vocab.BOUNDARY, tokens[:, jnp.maximum(i - 1, 0)])[:, None]
      segment = segment + (prev == vocab.BOUNDARY).astype(jnp.int32)
      positions = jnp.full((num_samples, 1), i, jnp.int32)
      logits, updated = model.decoder.apply(
          {'params': params, 'cache': cache}, prev, positions, segment,
          method=ByteAR.decode_step, mutable=['cache'])
      new = draw(jax.random.fold_in(key, i), logits[:, 0])
      keep_prompt = i < prefix_len
      tokens = tokens.at[:, i].set(jnp.where(keep_prompt, tokens[:, i], new))
      return (tokens, updated['cache'], segment), None

    init = (tokens, cache, jnp.zeros((num_samples, 1), jnp.int32))
    (tokens, _, _), _ = jax.lax.scan(step, init, jnp.arange(length, dtype=jnp.int32))
    return tokens

  @jax.jit
  def run_full(params, key, prefix):
    tokens = jnp.zeros(shape, jnp.int32).at[:, :prefix_len].set(prefix[None])

    def step(tokens, i):
      logits = model.net.apply({'params': params}, tokens)
      new = draw(jax.random.fold_in(key, i), logits[:, i])
      return tokens.at[:, i].set(jnp.where(i < prefix_len, tokens[:, i], new)), None

    tokens, _ = jax.lax.scan(step, tokens, jnp.arange(length, dtype=jnp.int32))
    return tokens

  return run_cached if cached else run_full

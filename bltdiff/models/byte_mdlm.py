"""Byte MDLM: masked diffusion over bytes, faithful to MDLM (Sahoo et al. 2024).

- Absorbing state: each byte is replaced by MASK with probability 1 − α(t).
- SUBS parameterization: the network never predicts MASK (its output has only
  the NUM_DATA_SYMBOLS data symbols) and visible bytes are carried over unchanged.
- No time input: the denoiser sees only z_t (MDLM shows this is as good, and it
  is what makes the cached sampler exact).
- Loss: continuous-time Rao-Blackwellized NELBO
    L = E_t[ w(t) · Σ_{masked i} −log p_θ(x_i | z_t) ],  w = −α'/(1−α),
  with antithetic t; reported as bits per byte (an upper bound on the NLL).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import layers, vocab
from bltdiff.errors import ConfigError
from bltdiff.models.contract import Model
from bltdiff.sampling import categorical, loops, registry
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule, antithetic_times


class ByteDenoiser(nn.Module):
  """Bidirectional transformer: z [batch, length] -> logits [batch, length, NUM_DATA_SYMBOLS]."""
  dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, deterministic: bool = True):
    x = layers.Embed(vocab.VOCAB_SIZE, self.dim, self.dtype, name='embed')(z)
    segments = jnp.ones_like(z)
    positions = jnp.broadcast_to(jnp.arange(z.shape[1], dtype=jnp.int32), z.shape)
    mask = layers.attention_mask(segments, segments, causal=False)
    x = layers.Transformer(num_layers=self.num_layers, num_heads=self.num_heads,
                           mlp_dim=self.mlp_dim, dtype=self.dtype, dropout=self.dropout,
                           name='transformer')(
                               x, mask, positions, deterministic=deterministic)
    return layers.readout(vocab.NUM_DATA_SYMBOLS)(x)


def subs_log_probs(logits, z):
  """SUBS: log p_θ(x_0 | z_t) [batch, length, NUM_DATA_SYMBOLS].

  Masked positions get the network's distribution (MASK is not among its
  outputs); visible positions are a point mass on their own byte."""
  net = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  visible = z != vocab.MASK
  carried = jnp.where(
      jax.nn.one_hot(jnp.where(visible, z, 0), vocab.NUM_DATA_SYMBOLS, dtype=bool), 0.0, -jnp.inf)
  return jnp.where(visible[..., None], carried, net)


def mask_tokens(key, x, alpha_t):
  """Forward process: x [batch, length], alpha_t [batch] -> (z_t, masked bool)."""
  masked = jax.random.uniform(key, x.shape, jnp.float32) >= alpha_t[:, None]
  return jnp.where(masked, vocab.MASK, x), masked


TRAIN_T_MIN = 1e-3  # MDLM's sampling_eps; evaluation uses 0 (the whole bound)


def nelbo(log_probs_fn, x, key, schedule: Schedule, t=None, t_min: float = 0.0,
          with_predictions: bool = False):
  """Continuous-time NELBO per sequence, in nats: [batch].

  log_probs_fn(z [batch, length]) -> log p(x_0 | z) [batch, length, symbols];
  t [batch] defaults to antithetic samples in (t_min, 1]. with_predictions:
  also return the log-probs and the masked positions bool [batch, length] (a
  caller's metrics read them; the bound is the same)."""
  t_key, mask_key = jax.random.split(key)
  if t is None:
    t = antithetic_times(t_key, x.shape[0], t_min)
  z, masked = mask_tokens(mask_key, x, schedule.alpha(t))
  log_probs = log_probs_fn(z)
  nll = -jnp.take_along_axis(log_probs, x[..., None], axis=-1)[..., 0]
  # Visible positions carry a point mass on their byte, so their nll is 0;
  # the `where` keeps 0·inf out of the sum if a caller's log-probs are -inf there.
  nll = jnp.where(masked, nll, 0.0)
  bound = schedule.weight(t) * jnp.sum(nll, axis=-1)
  return (bound, log_probs, masked) if with_predictions else bound


class ByteMDLM(Model):
  """Byte MDLM as a `Model`; every sampler of the registry works on it."""

  samplers = tuple(registry.SAMPLERS)

  def __init__(self, model_config):
    self.config = model_config
    self.schedule = Schedule(model_config.schedule, model_config.schedule_eps)
    self.net = ByteDenoiser(
        dim=model_config.dim, num_layers=model_config.num_layers,
        num_heads=model_config.num_heads, mlp_dim=model_config.mlp_dim,
        dropout=model_config.dropout, dtype=jnp.dtype(model_config.dtype))

  @classmethod
  def from_config(cls, config):
    return cls(config.model)

  def init(self, key, batch):
    return self.net.init({'params': key}, batch['tokens'][:1])['params']

  def log_probs(self, params, z, *, dropout_key=None):
    """z [batch, length] -> SUBS log-probs [batch, length, NUM_DATA_SYMBOLS]."""
    rngs = {'dropout': dropout_key} if dropout_key is not None else None
    logits = self.net.apply({'params': params}, z, deterministic=dropout_key is None, rngs=rngs)
    return subs_log_probs(logits, z)

  def loss(self, params, batch, key, train: bool = True, t=None):
    """Mean NELBO in nats per byte, and metrics (bits per byte); t [batch]
    fixes the masking times (default: antithetic draws)."""
    x = batch['tokens']
    loss_key, dropout_key = jax.random.split(key)
    fn = lambda z: self.log_probs(params, z, dropout_key=dropout_key if train else None)
    per_seq = nelbo(fn, x, loss_key, self.schedule, t=t, t_min=TRAIN_T_MIN if train else 0.0)
    loss = jnp.mean(per_seq) / x.shape[1]
    return loss, {'loss': loss, 'bpb': loss / math.log(2.0)}

  def sample(self, params, key, options: SamplerOptions, *, num_samples: int, length: int,
             prefix=None, suffix=None):
    """Draws [num_samples, length] int32 in [0, NUM_DATA_SYMBOLS) and stats.
    prefix / suffix: int arrays kept visible at the start / end (prompting and
    infilling: the gap between them is generated)."""
    if options.sampler not in self.samplers:
      raise ConfigError(f'sample.sampler: byte_mdlm has samplers {self.samplers}, '
                        f'got {options.sampler!r}')
    z = template(num_samples, length, prefix, suffix)
    tokens, stats = categorical.run_with_x64(compiled_sampler(self, options), params, key, z)
    return np.asarray(tokens), loops.summarize(stats)

  def sampler_adapter(self, params, top_p: float, num_samples: int, length: int):
    return ByteAdapter(self, params, top_p), template(num_samples, length)


def template(num_samples: int, length: int, prefix=None, suffix=None):
  """[num_samples, length] int32: MASK everywhere but the given prefix and suffix."""
  prefix = np.zeros((0,), np.int32) if prefix is None else np.asarray(prefix, np.int32)
  suffix = np.zeros((0,), np.int32) if suffix is None else np.asarray(suffix, np.int32)
  gap = length - len(prefix) - len(suffix)
  if gap <= 0:
    raise ConfigError(f'prompt: {len(prefix)} + {len(suffix)} given bytes leave no gap to '
                      f'generate in {length} positions')
  row = np.concatenate([prefix, np.full((gap,), vocab.MASK, np.int32), suffix])
  return jnp.asarray(np.tile(row, (num_samples, 1)))


class ByteAdapter(registry.ModelAdapter):
  """The sampler's view of byte MDLM: the state is z [batch, length] (MASK =
  still to generate), a prediction is SUBS log-probs [batch, length, 257]
  (top-p filtered), a proposal one drawn byte per position."""

  def predict(self, z):
    return categorical.top_p_filter(self.model.log_probs(self.params, z), self.top_p)

  def propose(self, key, log_probs, z, unmask):
    del unmask  # a byte draw is one categorical per position: draw them all
    return categorical.gumbel_argmax(key, log_probs)

  def commit(self, z, proposal, unmask):
    return jnp.where(unmask, proposal, z)

  def masked(self, z):
    return z == vocab.MASK

  def entropy_scores(self, log_probs, z):
    return categorical.entropy_of(log_probs)

  def remaining_entropy(self, log_probs, z):
    return jnp.sum(jnp.where(z == vocab.MASK, categorical.entropy_of(log_probs), 0.0), axis=-1)

  def confidence_scores(self, log_probs, z):
    return jnp.max(log_probs, axis=-1)


@functools.lru_cache(maxsize=32)  # one compilation per (model, options)
def compiled_sampler(model: ByteMDLM, options: SamplerOptions):
  """A jitted (params, key, z_init) -> (tokens, SamplerStats) for fixed options."""

  @jax.jit
  def run(params, key, z):
    return registry.run(ByteAdapter(model, params, options.top_p), key, z, options)

  return run

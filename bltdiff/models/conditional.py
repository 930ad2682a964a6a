"""Conditional byte models: byte AR and byte MDLM trained on (source, target)
pairs, `data.format = 'pairs'` (docs/design.md, "Conditional training").

Batches are those of `bltdiff.data.pair_batches` (b rows of L symbols):
  tokens      int32 [b, L]  [source s][SEP][target t][END][PAD ...]
  target_mask bool  [b, L]  True on the target bytes and END
  source_len  int32 [b]     s, the separator's position
  valid       bool  [b]     False on filler rows of a final eval batch
The source and the separator are always given, never predicted; the loss
covers the target only. Bits per byte are per target symbol:
  bpb = Σ_rows nats(row) / Σ target_mask / ln 2.

Byte AR (exact): nats(row) = Σ_{i: target_mask} −log p(x_i | x_<i), i.e.
  −log p(target, END | source). The row is one attention segment: the
  separator is an input symbol, not a document reset, so the target sees
  its source (text rows reset attention at every BOUNDARY).

Byte MDLM (a bound): the *region* is every position after the separator,
  its PAD replaced by BOUNDARY, y = [target][END][BOUNDARY ...] ([b, L − s − 1]
  per row). Only region positions are masked; the source stays visible:
    nats(row) = w(t) · Σ_{i ∈ region, masked} −log p_θ(y_i | source, z_t),
  MDLM's continuous-time NELBO of −log p_θ(y | source) (`region_nelbo`). y is
  a function of the target (given s and L) and the target is y up to its
  first BOUNDARY, so p_θ(target | source) ≥ p_θ(y | source) and the NELBO
  bounds the target's NLL. The filler is masked and scored like the target:
  left visible, PAD's position would tell the model where the target ends.

`generate(params, key, options, rows)` writes targets after given sources
(rows as above, blank after the separator: `pair_batches.source_rows`) and
returns rows of the same layout (PAD after END) and sampler stats; `sample`
(the contract's) treats a prompt as the source.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bltdiff import vocab
from bltdiff.data import pair_batches
from bltdiff.errors import ConfigError
from bltdiff.models import byte_ar, byte_mdlm
from bltdiff.sampling import categorical, loops, registry
from bltdiff.sampling.options import SamplerOptions
from bltdiff.schedules import Schedule, antithetic_times


def target_symbols(batch):
  """Σ target_mask over the batch (at least 1): the denominator of bpb."""
  return jnp.maximum(jnp.sum(batch['target_mask']), 1)


def row_valid(batch):
  """bool [b]: real rows (filler rows of a final eval batch are not)."""
  valid = batch.get('valid')
  return jnp.ones(batch['tokens'].shape[:1], bool) if valid is None else jnp.asarray(valid)


def region_mask(batch):
  """bool [b, L]: the positions after the separator, on real rows."""
  tokens = batch['tokens']
  after = jnp.arange(tokens.shape[1])[None, :] > jnp.asarray(batch['source_len'])[:, None]
  return after & row_valid(batch)[:, None]


def prompt_rows(prefix, num_samples: int, length: int, data_config):
  """The contract's prompt (source bytes or None) -> `generate`'s rows
  [num_samples, length], laid out and cut like the training pairs."""
  source = np.zeros((0,), np.uint8) if prefix is None else np.asarray(prefix).astype(np.uint8)
  row = pair_batches.layout_pair(
      {'source': source, 'target': np.zeros((0,), np.uint8)}, seq_len=length,
      max_source_share=float(data_config.max_source_share), source_keep=data_config.source_keep)
  rows = pair_batches.stack_rows([row] * num_samples, batch_size=num_samples, seq_len=length)
  return pair_batches.source_rows(rows)


def check_conditional_call(kind: str, samplers, options: SamplerOptions, suffix):
  if options.sampler not in samplers:
    raise ConfigError(f'sample.sampler: conditional {kind} has samplers {samplers}, '
                      f'got {options.sampler!r}')
  if suffix is not None:
    raise ConfigError('--suffix: a pairs model writes a target after its source; it does not infill')


class SourceConditioned:
  """What both conditional byte models share: the data config (the pair
  layout) and the contract's `sample`, which writes a target after the source
  `prefix` through the model's `generate`. Mixed in before the byte model."""

  kind = ''  # the model kind, for error messages

  def __init__(self, model_config, data_config):
    super().__init__(model_config)
    self.data_config = data_config

  @classmethod
  def from_config(cls, config):
    return cls(config.model, config.data)

  def sample(self, params, key, options: SamplerOptions, *, num_samples: int, length: int,
             prefix=None, suffix=None):
    """Targets for the source `prefix` (None = empty): rows [num_samples, length]."""
    check_conditional_call(self.kind, self.samplers, options, suffix)
    return self.generate(params, key, options,
                         prompt_rows(prefix, num_samples, length, self.data_config))


class ConditionalByteAR(SourceConditioned, byte_ar.ByteARModel):
  """Byte AR on pairs: exact −log p(target, END | source)."""

  kind = 'byte_ar'
  samplers = ('cached',)

  def logits(self, params, tokens):
    return self.net.apply({'params': params}, tokens, segments=jnp.ones_like(tokens))

  def target_nll(self, params, batch, dropout_key=None):
    """nats(row) [b]: −log p(target symbols | source) of each row."""
    tokens, mask = jnp.asarray(batch['tokens']), jnp.asarray(batch['target_mask'])
    rngs = {'dropout': dropout_key} if dropout_key is not None else None
    logits = self.net.apply({'params': params}, tokens, deterministic=dropout_key is None,
                            rngs=rngs, segments=jnp.ones_like(tokens))
    # PAD is no output symbol: read a harmless index there, then drop it.
    nll = byte_ar.sequence_nll(logits, jnp.where(mask, tokens, 0))
    return jnp.sum(jnp.where(mask, nll, 0.0), axis=-1)

  def loss(self, params, batch, key, train: bool = True):
    loss = jnp.sum(self.target_nll(params, batch, key if train else None)) / target_symbols(batch)
    return loss, {'loss': loss, 'bpb': loss / math.log(2.0)}

  def generate(self, params, key, options: SamplerOptions, rows):
    """Left to right after each row's separator until END or the row's end;
    one cached decoder call per position, the source's included (its cache is
    filled one position at a time). stats: latent_calls = steps = positions run."""
    check_conditional_call('byte_ar', self.samplers, options, None)
    tokens = jnp.asarray(rows['tokens'], jnp.int32)
    run = _conditional_ar_sampler(self, tokens.shape[0], tokens.shape[1], options.top_p)
    out, calls = categorical.run_with_x64(run, params, key, tokens,
                                          jnp.asarray(rows['source_len'], jnp.int32) + 1)
    calls = int(calls)
    return np.asarray(out), {'latent_calls': calls, 'steps': calls, 'proposals': calls,
                             'steps_taken': float(calls)}


@functools.lru_cache(maxsize=32)
def _conditional_ar_sampler(model: ConditionalByteAR, num_samples: int, length: int,
                            top_p: float):
  """jit((params, key, tokens [n, L], first [n]) -> (tokens, positions run)):
  draws position i of a row when i >= first[row] and the row has no END yet;
  stops when every row has ended."""
  shape = (num_samples, length)

  @jax.jit
  def run(params, key, tokens, first):
    # An empty cache, its shapes traced (byte_ar.compiled_sampler does the same).
    cache_shapes = jax.eval_shape(
        lambda: model.decoder.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.int32))['cache'])
    cache = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), cache_shapes)
    segment = jnp.ones((num_samples, 1), jnp.int32)  # one segment: the target sees its source

    def unfinished(carry):
      i, _, _, ended = carry
      return (i < length) & ~jnp.all(ended)

    def step(carry):
      i, tokens, cache, ended = carry
      prev = jnp.where(i == 0, vocab.BOUNDARY, tokens[:, jnp.maximum(i - 1, 0)])[:, None]
      logits, updated = model.decoder.apply(
          {'params': params, 'cache': cache}, prev, jnp.full((num_samples, 1), i, jnp.int32),
          segment, method=byte_ar.ByteAR.decode_step, mutable=['cache'])
      lp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
      new = categorical.gumbel_argmax(jax.random.fold_in(key, i),
                                      categorical.top_p_filter(lp, top_p))
      write = (i >= first) & ~ended
      tokens = tokens.at[:, i].set(jnp.where(write, new, tokens[:, i]))
      return i + 1, tokens, updated['cache'], ended | (write & (new == vocab.BOUNDARY))

    init = (jnp.array(0, jnp.int32), tokens, cache, first >= length)
    i, tokens, _, _ = jax.lax.while_loop(unfinished, step, init)
    return tokens, i

  return run


def region_nelbo(log_probs_fn, x, region, key, schedule: Schedule, t=None, t_min: float = 0.0):
  """Conditional NELBO per row, in nats [b]: MDLM's continuous-time bound on
  −log p(x[region] | x[~region]), masking region positions only.

  x int32 [b, L] (data symbols everywhere: the caller has filled PAD),
  region bool [b, L]; log_probs_fn(z [b, L]) -> log p(x_0 | z) [b, L, symbols]
  (SUBS: point masses on visible positions). t [b] defaults to antithetic
  draws in (t_min, 1]."""
  t_key, mask_key = jax.random.split(key)
  if t is None:
    t = antithetic_times(t_key, x.shape[0], t_min)
  noise = jax.random.uniform(mask_key, x.shape, jnp.float32)
  masked = region & (noise >= schedule.alpha(t)[:, None])
  z = jnp.where(masked, vocab.MASK, x)
  nll = -jnp.take_along_axis(log_probs_fn(z), x[..., None], axis=-1)[..., 0]
  return schedule.weight(t) * jnp.sum(jnp.where(masked, nll, 0.0), axis=-1)


def filled_region(batch):
  """(x [b, L] with the region's PAD filled by BOUNDARY, region [b, L])."""
  tokens, region = jnp.asarray(batch['tokens']), region_mask(batch)
  return jnp.where(region & (tokens == vocab.PAD), vocab.BOUNDARY, tokens), region


class ConditionalByteMDLM(SourceConditioned, byte_mdlm.ByteMDLM):
  """Byte MDLM on pairs: the NELBO of the region after the separator."""

  kind = 'byte_mdlm'

  def loss(self, params, batch, key, train: bool = True, t=None):
    """Σ_rows region NELBO / Σ target symbols (nats), and metrics; t [b]
    fixes the diffusion times (default: antithetic draws)."""
    x, region = filled_region(batch)
    loss_key, dropout_key = jax.random.split(key)
    fn = lambda z: self.log_probs(params, z, dropout_key=dropout_key if train else None)
    per_row = region_nelbo(fn, x, region, loss_key, self.schedule, t=t,
                           t_min=byte_mdlm.TRAIN_T_MIN if train else 0.0)
    loss = jnp.sum(per_row) / target_symbols(batch)
    return loss, {'loss': loss, 'bpb': loss / math.log(2.0)}

  def generate(self, params, key, options: SamplerOptions, rows):
    """Denoises every region position with options' sampler (the filler
    too), then keeps each row up to its first BOUNDARY after the separator
    (END) and PADs the rest."""
    check_conditional_call('byte_mdlm', self.samplers, options, None)
    tokens = np.asarray(rows['tokens'], np.int32)
    after = np.arange(tokens.shape[1])[None, :] > np.asarray(rows['source_len'])[:, None]
    z = jnp.asarray(np.where(after, vocab.MASK, tokens))
    out, stats = categorical.run_with_x64(_region_sampler(self, options), params, key, z)
    out = np.array(out)  # writable
    for r, s in enumerate(np.asarray(rows['source_len'])):
      target, ended = pair_batches.target_of(out[r], s)
      stop = s + 1 + len(target) + int(ended)
      out[r, stop:] = vocab.PAD
    return out, loops.summarize(stats)


@functools.lru_cache(maxsize=32)
def _region_sampler(model: ConditionalByteMDLM, options: SamplerOptions):
  """jit((params, key, z [n, L]) -> (z, SamplerStats)): the registry's sampler
  over the MASK positions of z."""

  @jax.jit
  def run(params, key, z):
    return registry.run(byte_mdlm.ByteAdapter(model, params, options.top_p), key, z, options)

  return run

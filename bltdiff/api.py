"""The Python API: a trained model that samples, encodes, decodes and scores
text, loaded from an export (`--mode=export`, bltdiff/training/export.py) on
any machine, CPU included, or from a training run directory.

  import bltdiff
  model = bltdiff.load('exports/demo')
  out = model.sample(num_samples=2, prompt='def main(', sampler='adaptive', seed=0)
  print(out.texts[0])
  model.bits_per_byte('def main():\\n    return 0\\n')
  enc = model.encode('def main():')     # latent MDLM: one latent per patch
  model.decode(enc.latents)             # one patch drawn from each latent

`sample` takes the sampling command's requests with the flags' names as
keywords (bltdiff/sample_request.py) and draws the same bytes as the command
for the same seed. `bits_per_byte` works for every kind; `encode`/`decode`
exist for latent MDLM only: byte models (byte_mdlm, byte_ar) have no latent
space, and there they raise a one-line BltdiffError.
"""

import math
from typing import NamedTuple, Sequence

import jax
import numpy as np

from bltdiff import patching, sample_request, text as text_lib
from bltdiff.errors import BltdiffError, ConfigError
from bltdiff.sampling.options import SamplerOptions, option_defaults
from bltdiff.training import export, restore


class Samples(NamedTuple):
  """What `sample` drew: tokens int [num_samples, n] (bytes, BOUNDARY between
  documents, PAD after a row's end; what the command saves as .npy) and the
  sampler's stats (latent_calls, steps, ...)."""
  tokens: np.ndarray
  stats: dict

  @property
  def texts(self) -> list[str]:
    """Readable text of each sample (invalid UTF-8 replaced, boundaries shown)."""
    return [text_lib.render(row) for row in self.tokens]

  @property
  def raw(self) -> list[bytes]:
    """The raw bytes of each sample (document boundaries dropped)."""
    return [text_lib.to_bytes(sample_request.strip_padding(row)) for row in self.tokens]


class Encoding(NamedTuple):
  """A text's patches and their latents h (decoder conditions, E then T)."""
  latents: np.ndarray  # float32 [num_patches, model.dec_dim]
  patches: list  # the bytes of each patch, as the model's patcher cut the text


def as_bytes(data, name: str = 'text') -> bytes:
  """str (encoded as UTF-8) or bytes -> bytes."""
  if isinstance(data, str):
    return data.encode('utf-8')
  if isinstance(data, (bytes, bytearray)):
    return bytes(data)
  raise ConfigError(f'{name}: expected str or bytes, got {type(data).__name__}')


class InferenceModel:
  """A model kind with its parameters and config; see the module docstring."""

  def __init__(self, config, model, params, step: int):
    self.config, self.model, self.params, self.step = config, model, params, step
    self.kind = config.model.kind
    self._loss = jax.jit(lambda p, batch, key: model.loss(p, batch, key, train=False)[0])
    if self.kind == 'latent_mdlm':
      self._encode = jax.jit(model.encode)

  def sample(self, *, num_samples=None, length=None, prompt=None, suffix=None, gap=None,
             total_length=None, seed: int = 0, **options) -> Samples:
    """Samples as the command draws them: num_samples (default
    config.sample.num_samples) of length bytes (default the context), prompt /
    suffix (str or bytes) kept visible, gap bytes between them, total_length
    beyond the context; sampler options (sampler, steps, top_p, ...) default
    to the model's config.sample."""
    unknown = sorted(set(options) - set(option_defaults()))
    if unknown:
      raise ConfigError(f'{unknown[0]}: not a sampler option; options are '
                        f'{", ".join(option_defaults())}')
    request = sample_request.make_request(
        self.config, SamplerOptions.from_config(self.config.sample, options,
                                                self.config.model.get('decoder_mode')),
        num_samples=num_samples, length=length, gap=gap, total_length=total_length,
        prompt=None if prompt is None else as_bytes(prompt, 'prompt'),
        suffix=None if suffix is None else as_bytes(suffix, 'suffix'), where='')
    tokens, stats = sample_request.draw(self.model, self.params, request,
                                        jax.random.PRNGKey(seed))
    return Samples(np.asarray(tokens), stats)

  def bits_per_byte(self, text, *, t_samples: int = 16, seed: int = 0) -> float:
    """The model's bits per byte on the text's bytes: byte AR's exact
    likelihood; for diffusion models the NELBO bound, averaged over t_samples
    draws of t (the bound is a Monte Carlo estimate). A text longer than the
    context is scored in rows of data.seq_len bytes, each on its own; a
    shorter one as one short row (latent MDLM's patch-count term p(S) was
    learned on full rows, so short texts pay a little more than in eval)."""
    data = as_bytes(text)
    if not data:
      raise ConfigError('text: empty; bits per byte need at least one byte')
    if not (isinstance(t_samples, int) and t_samples > 0):
      raise ConfigError(f't_samples: must be a positive integer, got {t_samples!r}')
    tokens = np.frombuffer(data, np.uint8).astype(np.int32)
    ents = self._entropies(data)
    n = int(self.config.data.seq_len)
    full = len(tokens) // n * n
    rows = [(0, full, full // n)] if full else []
    if full < len(tokens):
      rows.append((full, len(tokens), 1))
    draws = t_samples if self.model.stochastic_loss else 1
    key, nats = jax.random.PRNGKey(seed), 0.0
    for c, (start, end, num_rows) in enumerate(rows):
      batch = {'tokens': tokens[start:end].reshape(num_rows, -1)}
      if ents is not None:
        batch['entropies'] = ents[start:end].reshape(num_rows, -1)
      for r in range(draws):  # the loss is the mean over the rows' bytes
        nats += float(self._loss(self.params, batch, jax.random.fold_in(key, c * draws + r))) * (
            end - start)
    return nats / draws / len(tokens) / math.log(2.0)

  def encode(self, text, *, masked: Sequence[int] = ()) -> Encoding:
    """The text's patches and their latents h. Patches listed in `masked`
    (indices) are hidden from the network, as in diffusion: their latents are
    the model's prediction from the other patches, which `decode` turns into
    bytes (the local decoder is trained on such latents only, so decoding the
    latent of a visible patch is not a reconstruction)."""
    self._require_latent('encode')
    data = as_bytes(text)
    n, P = int(self.config.data.seq_len), self.model.patch_config.num_slots
    if not 0 < len(data) <= n:
      raise ConfigError(f'text: {len(data)} bytes; encode takes 1 to data.seq_len={n} bytes')
    tokens = np.frombuffer(data, np.uint8).astype(np.int32)[None]
    ents = self._entropies(data)
    ents = None if ents is None else ents[None]
    patches, patch_bytes = self.model.patchify(tokens, ents)
    k = int(patches.num_patches[0])
    if int(patches.num_overflow_bytes[0]):
      raise ConfigError(f'text: its patches overflow the model\'s {P} slots '
                        f'(patching.num_slots); encode a shorter text')
    hidden = np.zeros((1, P), bool)
    for i in masked:
      if not 0 <= i < k:
        raise ConfigError(f'masked: patch index {i} is not among the text\'s {k} patches')
      hidden[0, i] = True
    latents, _ = self._encode(self.params, tokens, ents, hidden)
    lengths = np.asarray(patches.lengths[0])
    pieces = [text_lib.to_bytes(np.asarray(patch_bytes[0, i, :lengths[i]])) for i in range(k)]
    return Encoding(np.asarray(latents[0, :k], np.float32), pieces)

  def decode(self, latents, *, seed: int = 0, top_p: float = 1.0) -> list:
    """One patch (bytes) drawn from the local decoder for each latent
    [num_patches, model.dec_dim]; b''.join(...) is the text."""
    self._require_latent('decode')
    latents = np.asarray(latents, np.float32)
    dim = int(self.config.model.dec_dim)
    if latents.ndim != 2 or latents.shape[1] != dim:
      raise ConfigError(f'latents: expected shape [num_patches, {dim}], got {latents.shape}')
    out, lengths = self.model.decode(self.params, latents[None], jax.random.PRNGKey(seed),
                                     top_p=top_p)
    out, lengths = np.asarray(out[0]), np.asarray(lengths[0])
    return [text_lib.to_bytes(out[i, :lengths[i]]) for i in range(len(latents))]

  def _require_latent(self, what: str):
    if self.kind != 'latent_mdlm':
      raise BltdiffError(f'{what}: a {self.kind} model has no latent space; encode and decode '
                         f'exist for latent_mdlm')

  def _entropies(self, data: bytes):
    """Per-byte entropies where the model's patcher needs them, else None."""
    if self.kind != 'latent_mdlm' or self.model.patch_config.mode not in patching.ENTROPY_MODES:
      return None
    if self.model.entropy_fn is None:
      raise ConfigError('patching.entropy_model: this model needs its entropy model to patch text')
    return np.asarray(self.model.entropy_fn([data])[0], np.float32)


def load(path: str) -> InferenceModel:
  """The model in `path`: an export directory, or a training run directory
  (its latest checkpoint; the EMA weights when the run keeps them)."""
  if export.is_training_run(path):
    loaded = restore.load_for_inference(path)
  else:
    loaded = export.load_export(path)
  return InferenceModel(loaded.config, loaded.model, loaded.params, loaded.step)

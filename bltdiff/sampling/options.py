"""Every sampler option in one dataclass, with its default and its help text.

The sampling command's flags (`bltdiff.sample_flags`) and config.sample are
read through it, so an option is declared once. Which options a sampler reads
is said in `bltdiff.sampling.registry.SAMPLERS`.
"""

import dataclasses
from typing import Any

from bltdiff.errors import ConfigError

# SamplerOptions field -> its name in config.sample.intra_patch.
INTRA_PATCH_CONFIG = {'intra_alpha': 'alpha', 'intra_min_steps': 'min_steps',
                      'intra_speculative': 'speculative'}
# The latent samplers with a step rule of their own (they read adaptive_alpha
# and min_steps); with any other, those two options given to a `diffusion`
# decoder run are the intra-patch rule's (see `route_step_rule_options`).
LATENT_STEP_RULE_SAMPLERS = ('adaptive', 'confidence')
STEP_RULE_TO_INTRA = {'adaptive_alpha': 'intra_alpha', 'min_steps': 'intra_min_steps'}


def route_step_rule_options(overrides: dict, sampler: str, decoder_mode: str | None) -> dict:
  """The proposal's names for the per-patch rule T_steps(p) = max(⌈α·H(p)⌉,
  T_min) are --adaptive_alpha and --min_steps. For a `diffusion` decoder run
  whose latent sampler has no step rule of its own (cached, ancestral), the
  given (non-None) adaptive_alpha / min_steps become intra_alpha /
  intra_min_steps, unless those are given too (explicit names win). With
  adaptive or confidence they stay the latent sampler's, whose α is per nat
  of the whole sequence, not of a patch: one flag never sets both levels."""
  if decoder_mode != 'diffusion' or sampler in LATENT_STEP_RULE_SAMPLERS:
    return dict(overrides)
  out = dict(overrides)
  for name, intra in STEP_RULE_TO_INTRA.items():
    if out.get(name) is not None:
      value = out.pop(name)
      if out.get(intra) is None:
        out[intra] = value
  return out


def _option(default, help_text: str):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
  """How to sample. Frozen (hashable): one compiled sampler per distinct value."""
  sampler: str = _option('cached', 'Sampler: see bltdiff.sampling.registry.SAMPLERS.')
  steps: int = _option(64, 'Denoising steps (ancestral, cached); the cap of adaptive '
                       'samplers when max_steps is 0.')
  top_p: float = _option(1.0, 'Nucleus sampling mass in (0, 1].')
  adaptive_alpha: float = _option(0.1, 'adaptive: steps per nat of the estimated entropy '
                                  'still to generate. With the diffusion decoder and the '
                                  'cached or ancestral sampler: intra_alpha.')
  min_steps: int = _option(1, 'adaptive, confidence: fewest steps. With the diffusion decoder '
                           'and the cached or ancestral sampler: intra_min_steps.')
  max_steps: int = _option(0, 'adaptive, confidence: most steps (0 = steps).')
  confidence_threshold: float = _option(0.9, 'confidence: reveal units whose proposal '
                                        'is more probable than this.')
  # The `diffusion` local decoder's intra-patch rule (config: sample.intra_patch):
  # T_steps(p) = min(L, max(ceil(intra_alpha * Ĥ(p)), intra_min_steps)).
  intra_alpha: float = _option(1.0, 'diffusion decoder: intra-patch steps per nat of the '
                               "patch's estimated entropy (large: one byte per step; 0: one "
                               'pass).')
  intra_min_steps: int = _option(1, 'diffusion decoder: fewest intra-patch steps per patch.')
  intra_speculative: bool = _option(False, 'diffusion decoder (two streams): check left-to-right '
                                    'drafts in each pass (self-speculative, exact) instead of '
                                    'revealing a random order; the steps cap its passes.')

  @property
  def step_cap(self) -> int:
    """The most steps a data-dependent sampler may take."""
    return self.max_steps or self.steps

  @classmethod
  def from_config(cls, sample_config: Any, overrides: dict | None = None,
                  decoder_mode: str | None = None) -> 'SamplerOptions':
    """From config.sample (fields it lacks keep their defaults; the intra_*
    fields from its intra_patch section), then the non-None overrides
    (command-line flags), routed by `route_step_rule_options` for the run's
    decoder_mode (config.model.decoder_mode; None: not a latent run)."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {n: sample_config[n] for n in names if n in sample_config}
    section = sample_config['intra_patch'] if 'intra_patch' in sample_config else {}
    values.update({n: section[c] for n, c in INTRA_PATCH_CONFIG.items() if c in section})
    overrides = overrides or {}
    sampler = overrides.get('sampler') or values.get('sampler', cls.sampler)
    overrides = route_step_rule_options(overrides, sampler, decoder_mode)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)

  def check(self, where: str = 'sample.'):
    """Raises ConfigError naming the first bad option as `{where}{name}`
    (config names: `sample.intra_patch.alpha` for intra_alpha, ...)."""
    if where == 'sample.':
      where_intra = lambda n: f'sample.intra_patch.{INTRA_PATCH_CONFIG[n]}'
    else:
      where_intra = lambda n: f'{where}{n}'
    positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
    if not positive(self.steps):
      raise ConfigError(f'{where}steps: must be a positive integer, got {self.steps!r}')
    if not 0.0 < self.top_p <= 1.0:
      raise ConfigError(f'{where}top_p: must be in (0, 1], got {self.top_p}')
    if not positive(self.min_steps):
      raise ConfigError(f'{where}min_steps: must be a positive integer, got {self.min_steps!r}')
    if not (isinstance(self.max_steps, int) and self.max_steps >= 0):
      raise ConfigError(f'{where}max_steps: must be a non-negative integer, got '
                        f'{self.max_steps!r}')
    if self.min_steps > self.step_cap:
      raise ConfigError(f'{where}min_steps: {self.min_steps} exceeds the step cap '
                        f'{self.step_cap} (max_steps, or steps)')
    if not self.adaptive_alpha >= 0.0:
      raise ConfigError(f'{where}adaptive_alpha: must be non-negative, got '
                        f'{self.adaptive_alpha}')
    if not 0.0 < self.confidence_threshold < 1.0:
      raise ConfigError(f'{where}confidence_threshold: must be in (0, 1), got '
                        f'{self.confidence_threshold}')
    if not self.intra_alpha >= 0.0:
      raise ConfigError(f'{where_intra("intra_alpha")}: must be non-negative, got '
                        f'{self.intra_alpha}')
    if not positive(self.intra_min_steps):
      raise ConfigError(f'{where_intra("intra_min_steps")}: must be a positive integer, got '
                        f'{self.intra_min_steps!r}')
    if not isinstance(self.intra_speculative, bool):
      raise ConfigError(f'{where_intra("intra_speculative")}: must be True or False, got '
                        f'{self.intra_speculative!r}')


def option_help() -> dict[str, str]:
  """name -> help text of every option (for the command's flags)."""
  return {f.name: f.metadata['help'] for f in dataclasses.fields(SamplerOptions)}


def option_defaults() -> dict[str, Any]:
  return {f.name: f.default for f in dataclasses.fields(SamplerOptions)}

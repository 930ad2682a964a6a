"""Validation of run configs: a bad value stops the run with a one-line error
that names the field, before anything is compiled or read."""

from bltdiff.data import pair_batches
from bltdiff.models import registry
from bltdiff.errors import ConfigError
from bltdiff.latent import train_objective
from data_prep import pair_sources
from bltdiff.sampling.options import SamplerOptions
from bltdiff.patch_starts import ENTROPY_MODES
from bltdiff.schedules import SCHEDULES

MODES = ('train', 'eval', 'sample', 'eval_task')


def _require(condition: bool, message: str):
  if not condition:
    raise ConfigError(message)


def _positive_int(config, path: str, allow_zero: bool = False):
  value = config
  for part in path.split('.'):
    value = value[part]
  ok = isinstance(value, int) and not isinstance(value, bool) and (
      value >= 0 if allow_zero else value > 0)
  _require(ok, f'{path}: must be a {"non-negative" if allow_zero else "positive"} integer, '
           f'got {value!r}')


def validate(config, num_batch_shards: int = 1):
  """Raises ConfigError for the first bad field. num_batch_shards: devices the
  global batch is split over (processes x data x fsdp)."""
  data_format = pair_batches.data_format(config.data)
  _require(data_format in pair_batches.FORMATS,
           f'data.format: expected one of {pair_batches.FORMATS}, got {data_format!r}')
  model_cls = registry.model_class(config.model.kind, data_format)
  m = config.model
  _positive_int(config, 'model.dim')
  _positive_int(config, 'model.num_layers')
  _positive_int(config, 'model.num_heads')
  _positive_int(config, 'model.mlp_dim')
  _require(m.dim % m.num_heads == 0 and (m.dim // m.num_heads) % 2 == 0,
           f'model.dim: {m.dim} must split into model.num_heads={m.num_heads} heads of even '
           f'size (RoPE rotates pairs)')
  if 'schedule' in m:  # diffusion models
    _require(m.schedule in SCHEDULES,
             f'model.schedule: unknown schedule {m.schedule!r}; expected one of {SCHEDULES}')
  weighting = train_objective.weighting_of(m)
  _require(weighting in train_objective.SLOT_WEIGHTINGS,
           f'model.slot_weighting: expected one of {train_objective.SLOT_WEIGHTINGS}, '
           f'got {weighting!r}')
  _require(weighting == 'byte' or data_format != 'pairs',
           "model.slot_weighting: 'slot' is for text runs; the conditional model trains on "
           "its bound ('byte')")
  masking = train_objective.masking_of(m)
  _require(masking in train_objective.MASKINGS,
           f'model.masking: expected one of {train_objective.MASKINGS}, got {masking!r}')
  _require(masking == 'independent' or data_format != 'pairs',
           "model.masking: 'count' is for text runs; the conditional model draws t")
  visible = m.get('visible_weight', 0.0)
  _require(isinstance(visible, (int, float)) and visible >= 0,
           f'model.visible_weight: expected a number >= 0, got {visible!r}')
  _require(not visible or data_format != 'pairs',
           'model.visible_weight: the autoencoding term is for text runs; set it to 0')
  _require(m.dtype in ('float32', 'bfloat16'),
           f'model.dtype: expected float32 or bfloat16, got {m.dtype!r}')

  _positive_int(config, 'data.seq_len')
  _require(config.data.seq_len >= 2, f'data.seq_len: must be at least 2, got {config.data.seq_len}')
  fraction = config.data.get('train_fraction', 1.0)
  _require(0.0 < fraction <= 1.0, f'data.train_fraction: must be in (0, 1], got {fraction}')
  if data_format == 'pairs':
    _check_pairs(config)

  _check_train(config, num_batch_shards)

  s = config.sample
  _positive_int(config, 'sample.num_samples')
  options = SamplerOptions.from_config(s)
  options.check(where='sample.')
  _require(not options.intra_speculative or (m.get('decoder_mode') == 'diffusion'
                                             and m.get('dec_two_stream', False)),
           'sample.intra_patch.speculative: checks drafts with a two-stream diffusion decoder '
           '(model.decoder_mode = diffusion, model.dec_two_stream = True); set it to False')
  if s.sampler not in model_cls.samplers:
    raise ConfigError(f'sample.sampler: {m.kind} has samplers {model_cls.samplers}, got '
                      f'{s.sampler!r}')
  block = s.block_length
  _require(isinstance(block, int) and block >= 0,
           f'sample.block_length: must be a non-negative integer, got {block!r}')
  if block:
    _require(config.data.seq_len % block == 0,
             f'data.seq_len: {config.data.seq_len} is not a multiple of sample.block_length='
             f'{block} (semi-autoregressive blocks must tile the context)')

  model_cls.validate(config)


def _check_train(config, num_batch_shards: int):
  """The train section: optimizer and the loop's cadence."""
  t = config.train
  _positive_int(config, 'train.num_steps', allow_zero=True)
  _positive_int(config, 'train.batch_size')
  _require(t.batch_size % num_batch_shards == 0,
           f'train.batch_size: {t.batch_size} is not divisible by the {num_batch_shards} '
           f'devices the batch is split over (processes x mesh.data x mesh.fsdp)')
  _require(t.learning_rate > 0, f'train.learning_rate: must be positive, got {t.learning_rate}')
  _positive_int(config, 'train.warmup_steps', allow_zero=True)
  _require(isinstance(t.ema_rate, (int, float)) and 0.0 <= t.ema_rate < 1.0,
           f'train.ema_rate: must be in [0, 1) (0 = no EMA), got {t.ema_rate!r}')
  for field in ('log_every', 'eval_every', 'sample_every', 'checkpoint_every', 'eval_batches',
                'keep_checkpoints', 'grad_accum_steps'):
    _positive_int(config, f'train.{field}')


def is_distillation(config) -> bool:
  """A distillation command config: a distill section and no model of its own
  (a round's saved config.json has both, and is an ordinary run's)."""
  return config.get('distill') is not None and config.get('model') is None


def validate_distill(config, num_batch_shards: int = 1):
  """A distillation config (configs/distill_demo.py): its distill, train and
  mesh sections; the model, data and patcher are the teacher run's
  (bltdiff.training.distill checks the teacher when it reads it)."""
  d = config.get('distill')
  _require(isinstance(d.teacher, str) and bool(d.teacher),
           'distill.teacher: give the workdir of a trained latent MDLM run '
           '(--config.distill.teacher=DIR)')
  for field in ('teacher_steps', 'rounds', 'step_ratio'):
    _positive_int(config, f'distill.{field}')
  _require(d.step_ratio >= 2, f'distill.step_ratio: must be at least 2, got {d.step_ratio}')
  _require(d.teacher_steps % d.step_ratio ** d.rounds == 0,
           f'distill.rounds: {d.rounds} rounds of step_ratio {d.step_ratio} do not divide '
           f'distill.teacher_steps={d.teacher_steps} (round r samples with '
           f'teacher_steps / step_ratio^r steps)')
  _check_train(config, num_batch_shards)


def _check_pairs(config):
  """data.format = 'pairs': the row layout, and where latent MDLM's entropy model comes from."""
  d = config.data
  pair_batches.check_layout(d.seq_len, d.max_source_share, d.source_keep)
  _positive_int(config, 'data.passage_bytes')
  p = config.get('patching')
  if (config.model.kind == 'latent_mdlm' and p is not None and p.mode in ENTROPY_MODES
      and not p.entropy_model and not d.prepared_dir and d.source in pair_sources.PAIR_SOURCES):
    raise ConfigError(f'patching.entropy_model: data.source={d.source!r} is a dataset of pairs, '
                      f'with no text to train an entropy model on; give a trained one')

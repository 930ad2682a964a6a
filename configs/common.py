"""Shared pieces of run configs, big_vision style: every run config is a short
delta over these. Defaults live here and only here; the code reads config
fields without fallbacks, so a field missing from a config is an error, not a
silent default. Tests and benchmarks build their configs from these helpers too.

  run(model=..., data=..., train=..., ...)      a whole run config
  data_config / train_config / sample_config / mesh_config   sections every run has
  byte_model(kind) / latent_model()             model sections
  patching_config()                             BLT patching of latent MDLM
  entropy_model_run(data)                       the small byte AR that scores entropies
  distill_config() / distill_run(...)           distillation rounds from a trained latent MDLM
"""

import dataclasses

import ml_collections

from bltdiff.sampling.options import INTRA_PATCH_CONFIG, SamplerOptions
from data_prep import pair_sources, sources, writer


def data_config(**overrides) -> ml_collections.ConfigDict:
  """Where the bytes come from (data_prep.prepare) and how they are packed."""
  c = dict(
      source='builtin',  # builtin | text | openwebtext | wikitext103 | lm1b | text8
      #                    pairs only: cnn_dailymail | xsum | writingprompts
      # 'text': documents packed into rows; 'pairs': one (source, target) pair
      # per row, the loss on the target only (bltdiff.data.pair_batches).
      format='text',
      passage_bytes=pair_sources.DEFAULT_PASSAGE_BYTES,  # pairs of a text source: passage -> next
      max_source_share=0.5,  # pairs: most of a row the source may take
      source_keep='end',  # pairs: a cut source keeps its 'end' (continuation) or 'start'
      paths='',  # text/text8: comma-separated files, dirs or globs
      data_files='',  # openwebtext/wikitext103: local parquet/JSONL (empty = HF hub)
      prepared_dir='',  # shards prepared beforehand; empty = prepare into WORKDIR/data
      seq_len=256,  # bytes per training row
      validation_fraction=0.05,
      # Share of the train split's documents a run trains on, evenly spread
      # (data-scaling experiments: bench/scaling.py's data_half); 1.0 = all.
      train_fraction=1.0,
      builtin_max_bytes=sources.DEFAULT_BUILTIN_MAX_BYTES,
      doc_bytes=sources.DEFAULT_DOC_BYTES,  # longer documents are cut
      shard_bytes=writer.DEFAULT_SHARD_BYTES,
      use_entropies=False,  # read per-byte entropies beside the bytes (latent chain sets it)
      num_workers=0,  # grain worker processes (0 = in-process; fastest on 2 cores)
      read_threads=0)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def train_config(**overrides) -> ml_collections.ConfigDict:
  """Optimizer (AdamW, warmup + cosine) and the loop's cadence."""
  c = dict(
      batch_size=16, num_steps=400, learning_rate=2e-3, warmup_steps=40,
      final_lr_fraction=0.1, weight_decay=0.01, b1=0.9, b2=0.99, grad_clip=1.0,
      grad_accum_steps=1,
      log_every=50, eval_every=200, eval_batches=8,
      eval_t_samples=4,  # draws of t per eval batch (the bound is Monte Carlo)
      sample_every=200, checkpoint_every=200, keep_checkpoints=2,
      # EMA of the parameters for eval, samples and export (bltdiff.training.ema);
      # 0 = off. Off by default: its horizon 1/(1 − r) must be well under the run's
      # length, and MD4's 0.9999 averages over ~10k steps, so a 400-step demo run
      # would sample from nearly its initialization. Long runs set it (owt.py).
      ema_rate=0.0,
      peak_flops_per_device=0.0)  # 0 = from the device kind (bltdiff.training.mfu)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def sample_config(**overrides) -> ml_collections.ConfigDict:
  """Sampler options (bltdiff.sampling.options.SamplerOptions, whose defaults
  these are) plus how many samples and the semi-autoregressive block."""
  defaults = dataclasses.asdict(SamplerOptions())
  c = {k: v for k, v in defaults.items() if k not in INTRA_PATCH_CONFIG}
  c.update(num_samples=4, block_length=0)  # 0 = half the context, for --total_length
  # The `diffusion` local decoder's intra-patch steps T_steps(p) =
  # min(L, max(ceil(alpha * Ĥ(p)), min_steps)); flags --intra_alpha, --intra_min_steps
  # (or, with the cached / ancestral sampler, --adaptive_alpha, --min_steps).
  # speculative (--intra_speculative, two-stream decoders): passes check
  # left-to-right drafts, an exact draw of the chain in fewer passes.
  c['intra_patch'] = {config_name: defaults[field]
                      for field, config_name in INTRA_PATCH_CONFIG.items()}
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def mesh_config(**overrides) -> ml_collections.ConfigDict:
  """Device mesh axes (bltdiff.sharding); -1 = all remaining devices."""
  c = dict(data=-1, fsdp=1, tensor=1)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def byte_model(kind: str, **overrides) -> ml_collections.ConfigDict:
  """A byte-level transformer: byte_mdlm (bidirectional, MDLM loss) or byte_ar."""
  c = dict(kind=kind, dim=128, num_layers=4, num_heads=4, mlp_dim=384, dropout=0.0,
           dtype='float32',
           schedule='loglinear', schedule_eps=0.0,  # byte_mdlm: α(t) (bltdiff.schedules)
           attention_window=0)  # byte_ar: > 0 bounds the context (entropy models)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def latent_model(**overrides) -> ml_collections.ConfigDict:
  """Latent MDLM: the latent transformer (dim, num_layers, num_heads,
  mlp_dim) over patch slots, enc_* the local encoder, dec_* the local decoder."""
  c = dict(
      kind='latent_mdlm', dim=128, num_layers=4, num_heads=4, mlp_dim=384, dropout=0.0,
      enc_dim=64, enc_layers=1, enc_heads=2, enc_mlp_dim=192, pool_queries=2,
      ngram_sizes=(3, 4, 5, 6, 7, 8), hash_buckets=4096,
      dec_dim=64, dec_layers=1, dec_heads=2, dec_mlp_dim=192,
      # 'ar' (byte by byte), 'parallel' (first byte + length, then all) or 'diffusion'
      # (masked diffusion over the patch, sample.intra_patch steps)
      decoder_mode='ar',
      # `diffusion` only: the intra-patch reveal order, earlier positions first with
      # log-odds dec_order_bias per position apart (0: uniformly random, MDLM's;
      # large: left to right, the `ar` chain rule; bltdiff/latent/intra_patch.py)
      dec_order_bias=0.0,
      dec_nelbo_draws=1,  # `diffusion` only: draws of its NELBO per patch in the loss, averaged
      # `diffusion` only: train with two-stream attention, every position of one
      # reveal order per pass (bltdiff/latent/diffusion_decoder.py)
      dec_two_stream=False,
      # `diffusion` only: Ĥ(p) of the step rule from a head trained on the patch's NELBO
      # (True) or the first pass's summed entropy (False)
      dec_entropy_head=False,
      # `diffusion` with two streams: a second query per position trained on what a
      # sampler of fewer than L intra-patch steps sees (its value leaves the bound)
      dec_block_queries=False,
      # `diffusion` only: every token also embeds the symbol before it, as it sees it
      # (the `ar` decoder's direct path to the previous byte)
      dec_previous_symbol=False,
      # `diffusion` with two streams: K more queries per position, the d-th without the
      # d symbols before it: self-speculative drafts after a redrawn symbol (value leaves
      # the bound)
      dec_lookahead=0,
      # Training only (bltdiff/latent/train_objective.py; eval is the bound as always):
      # 'byte' trains on the bound, 'slot' weighs every masked slot the same;
      # 'independent' draws t then the masked slots, 'count' draws their number.
      slot_weighting='byte', masking='independent',
      visible_weight=0.0,  # > 0: + that x the decoder's NLL of visible patches (autoencoding)
      schedule='loglinear', schedule_eps=0.0, dtype='float32')
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def patching_config(**overrides) -> ml_collections.ConfigDict:
  """BLT entropy patching (bltdiff.patching); the threshold is calibrated on
  the train split to calibrate_target_mean bytes per patch (0 = keep it).
  num_slots = P_max: patches that do not fit are paid for as overflow bytes."""
  c = dict(mode='entropy', threshold=1.5, monotonic_threshold=0.0, reset_on_newline=False,
           static_size=4, max_patch_len=8, num_slots=80,
           entropy_model='',  # a trained byte_ar workdir; empty = train config.entropy_model
           calibrate_target_mean=4.5, calibrate_bytes=1 << 19)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def run(*, model, data, train, sample=None, mesh=None, seed: int = 0,
        **sections) -> ml_collections.ConfigDict:
  """A whole run config; extra sections (patching, entropy_model) as given."""
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.model, c.data, c.train = model, data, train
  c.sample = sample if sample is not None else sample_config()
  c.mesh = mesh if mesh is not None else mesh_config()
  for name, section in sections.items():
    c[name] = section
  return c


def entropy_model_run(data, seq_len: int = 128, **model_overrides):
  """The BLT entropy model: a small causal byte transformer on the same data.
  Entropies only need a rough next-byte distribution, so it trains in a
  minute or two at demo size."""
  return run(
      model=byte_model('byte_ar', **dict(dict(dim=64, num_layers=2, num_heads=4, mlp_dim=192),
                                         **model_overrides)),
      # Always text: entropies score documents, and a pairs run's entropy model
      # reads the same source as text (its passages' documents).
      data=data_config(**dict(data.to_dict(), seq_len=seq_len, use_entropies=False,
                              format='text')),
      train=train_config(batch_size=32, num_steps=200, learning_rate=3e-3, warmup_steps=20,
                  eval_every=200, eval_batches=4, eval_t_samples=1, sample_every=10_000,
                  checkpoint_every=200, keep_checkpoints=1),
      sample=sample_config(steps=1, num_samples=1))


def distill_config(**overrides) -> ml_collections.ConfigDict:
  """Distillation rounds (bltdiff.training.distill): the teacher run, the
  step count it samples with, how many rounds, and how many teacher steps
  one student step replaces (round r's student: teacher_steps / step_ratio^r)."""
  c = dict(teacher='',  # a trained latent MDLM workdir (--config.distill.teacher=DIR)
           teacher_steps=32, rounds=4, step_ratio=2)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def distill_run(*, train, distill=None, mesh=None, seed: int = 0) -> ml_collections.ConfigDict:
  """A distillation config: train is every round's optimizer and cadence; the
  model, data and patcher are the teacher run's."""
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.train = train
  c.mesh = mesh if mesh is not None else mesh_config()
  c.distill = distill if distill is not None else distill_config()
  return c

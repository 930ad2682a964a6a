"""Bits per byte of latent MDLM (decoders `ar`, `parallel` and `diffusion`), byte
MDLM and byte AR at equal training FLOPs on the development corpus.

  python bench/likelihood.py [--scale=1.0] [--workdir=runs/bench_likelihood]

Writes bench/results/likelihood.json (a list of rows {"system", "decoder_mode",
"bpb", "train_flops", "params", "mean_patch_bytes", ...}) and
bench/results/likelihood.png, and prints a markdown table for BENCHMARKS.md.

Protocol
- Data: ../shared/data/gutenberg (eight public-domain books), prepared once by
  the latent chain (with per-byte entropies) and read by every system from the
  same shards, so all share one train/validation split (books cut into 32 KB
  documents, every 20th held out).
- Patching: a small entropy model trained by the chain on the same train split;
  the global threshold is calibrated to 4.5 bytes per patch.
- FLOPs: bltdiff.flops.count of one forward+backward pass of each
  model's training loss on one global batch (the optimizer update is left
  out: it is per parameter, not per byte). The budget is the latent MDLM (ar)
  run's FLOPs per step x BASE_STEPS x scale; every system gets
  round(budget / its FLOPs per step) steps. The entropy model's training and
  inference are NOT counted (BLT does not count them either; they are shared
  by both latent rows and would be ~1/3 of one run here).
- Evaluation: bits per byte on the validation split, the same batches for all
  (eval_batches x batch_size x seq_len bytes); diffusion bounds average
  eval_t_samples draws of t per batch with t_min = 0 (the whole NELBO); AR is
  exact. The latent bound includes the p(S) and overflow terms; with the
  `diffusion` decoder each masked patch's −log p(patch | h) is itself its
  intra-patch NELBO (a bound of a bound, bltdiff/latent/diffusion.py), one
  draw of the reveal order per slot alongside each draw of t; its recipe is
  DIFFUSION_RECIPE (bench/scaling.py's one_stream and order_* variants
  measure others).
Every system is trained by the project's trainer (bltdiff.commands.train).
"""

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'gutenberg'
RESULTS = REPO / 'bench' / 'results'

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from bltdiff import commands, flops  # noqa: E402
from bltdiff.models import registry  # noqa: E402
from bltdiff.training import checkpointing, state  # noqa: E402
from configs import common  # noqa: E402

sys.path.insert(0, str(REPO / 'bench'))
import report  # noqa: E402

SEQ_LEN = 256
BATCH = 16
BASE_STEPS = 400  # latent MDLM (ar) steps at scale 1
LATENT_DECODERS = ('ar', 'parallel', 'diffusion')
# The `diffusion` decoder's recipe: a reveal order nearly left to right (its
# tightest bound measured: bench/scaling.py's order_* variants, uniform to 8),
# trained with two streams (every position of an order per pass; one_stream is
# the variant without), Ĥ(p) from its head, every token embedding the symbol
# before it (no_previous_symbol is the variant without: 5% looser at 1x).
DIFFUSION_ORDER_BIAS = 8.0
DIFFUSION_RECIPE = dict(dec_order_bias=DIFFUSION_ORDER_BIAS, dec_two_stream=True,
                        dec_entropy_head=True,
                        dec_previous_symbol=True)  # bltdiff rows; 'ar' first: it sets the budget


def common_sections(seed=0):
  """data / train / sample sections shared by every system of the benchmark."""
  return dict(
      seed=seed,
      data=common.data_config(source='text', paths=str(CORPUS / '*.txt'), seq_len=SEQ_LEN,
                              builtin_max_bytes=0, doc_bytes=32_768),
      train=common.train_config(batch_size=BATCH, num_steps=100, warmup_steps=50,
                                log_every=100, eval_every=1_000_000, eval_batches=16,
                                sample_every=1_000_000, checkpoint_every=1_000_000,
                                keep_checkpoints=1),
      sample=common.sample_config(num_samples=2))


def entropy_model_config():
  sections = common_sections()
  c = common.entropy_model_run(sections['data'], seq_len=128)
  c.train.update(batch_size=32, num_steps=300, learning_rate=3e-3, warmup_steps=30,
                 eval_batches=2, log_every=100)
  return c


def latent_config(decoder_mode):
  sections = common_sections()
  sections['data'].use_entropies = True  # the chain's shards carry them; example batches too
  recipe = DIFFUSION_RECIPE if decoder_mode == 'diffusion' else {}
  return common.run(
      model=common.latent_model(dim=192, num_layers=4, num_heads=6, mlp_dim=576,
                                decoder_mode=decoder_mode, **recipe),
      patching=common.patching_config(num_slots=80), entropy_model=entropy_model_config(),
      **sections)


def byte_config(kind):
  return common.run(model=common.byte_model(kind), **common_sections())


def step_flops_and_params(config):
  """(FLOPs of one forward+backward of the loss on a global batch, parameter count)."""
  model = registry.get_model(config)
  batch = state.example_batch(config, config.train.batch_size)
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
  grad = jax.value_and_grad(lambda p, b, k: model.loss(p, b, k, True)[0])
  return (flops.count(grad, abstract, batch, jax.random.PRNGKey(0)),
          sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)))


def run_system(name, config, workdir, steps, max_warmup_fraction: float = 0.1):
  """Trains with the project's trainer, then evaluates the final checkpoint
  (an evaluation already written for that step is read back, not redone).
  The warmup is at most max_warmup_fraction of the steps."""
  with config.unlocked():
    config.train.num_steps = steps
    config.train.warmup_steps = min(config.train.warmup_steps,
                                     max(1, int(steps * max_warmup_fraction)))
  start = time.time()
  commands.train(config, workdir)
  train_s = time.time() - start
  done = Path(workdir) / f'eval_step_{steps}.json'
  metrics = json.loads(done.read_text()) if done.exists() else commands.evaluate(workdir)
  return metrics, train_s, time.time() - start - train_s


def plot(rows, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 3.6))
  labels = [r['system'] + (f" ({r['decoder_mode']})" if r['decoder_mode'] else '') for r in rows]
  colors = ['tab:blue' if r['system'] == 'bltdiff' else 'tab:gray' for r in rows]
  bars = ax.bar(labels, [r['bpb'] for r in rows], color=colors)
  for bar, r in zip(bars, rows):
    ax.annotate(f"{r['bpb']:.3f}\n{r['mean_patch_bytes']:.2f} B/patch",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha='center',
                va='bottom', fontsize=8)
  ax.set_ylabel('validation bits per byte (bound)')
  ax.set_title(f'Gutenberg, equal training FLOPs ({rows[0]["train_flops"]:.2e} each)',
               fontsize=10)
  ax.set_ylim(0, max(r['bpb'] for r in rows) * 1.25)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def train_systems(scale: float, workdir: str, only=None):
  """Trains (or reuses, when already trained in workdir) every system at the same
  training-FLOPs budget, then evaluates it. Returns (rows, runs, shared): rows
  for the JSON; runs: {name: run directory}; shared: the split, entropy model
  and threshold every system used, and every system's training FLOPs. only: the names to train (bltdiff_ar, whose
  run prepares what the others share, is always trained); default all."""
  work = Path(workdir) / f'scale_{scale:g}'
  # The entropy model does not depend on the budget: trained once, reused by every scale.
  entropy_dir = Path(workdir) / 'entropy_model'
  commands.train(entropy_model_config(), str(entropy_dir))

  # The latent chain runs first: entropy model, shards with entropies, calibration.
  systems = [('bltdiff', mode, latent_config(mode)) for mode in LATENT_DECODERS]
  systems += [('byte_mdlm', '', byte_config('byte_mdlm')), ('byte_ar', '', byte_config('byte_ar'))]
  for system, _, config in systems:
    if system == 'bltdiff':
      config.patching.entropy_model = str(entropy_dir)
  costs = [step_flops_and_params(c) for _, _, c in systems]
  budget = costs[0][0] * BASE_STEPS * scale
  rows, runs, shared = [], {}, {}
  # Every system's training FLOPs, trained here or not (what a budget elsewhere is read from).
  train_flops = {system + (f'_{mode}' if mode else ''): step_flops * max(1, round(budget / step_flops))
                 for (system, mode, _), (step_flops, _) in zip(systems, costs)}
  for (system, mode, config), (step_flops, params) in zip(systems, costs):
    name = system + (f'_{mode}' if mode else '')
    if only is not None and shared and name not in only:
      continue
    steps = max(1, round(budget / step_flops))
    if shared:  # later systems read the first run's shards (same split) and entropy model
      with config.unlocked():
        config.data.prepared_dir = shared['prepared_dir']
        if 'patching' in config:
          config.patching.entropy_model = shared['entropy_model']
    print(f'== {name}: {step_flops:.3e} FLOPs/step x {steps} steps, {params / 1e6:.2f}M params',
          flush=True)
    runs[name] = str(work / name)
    metrics, train_s, eval_s = run_system(name, config, runs[name], steps)
    if not shared:
      saved = checkpointing.load_config(str(work / name))  # paths resolved against the run
      shared = dict(prepared_dir=saved.data.prepared_dir,
                    entropy_model=saved.patching.entropy_model,
                    threshold=saved.patching.threshold, train_flops=train_flops)
    rows.append(dict(
        system=system, decoder_mode=mode or None, bpb=metrics['eval_bpb'],
        train_flops=step_flops * steps, params=params,
        mean_patch_bytes=metrics.get('eval_mean_patch_bytes', 1.0),
        steps=steps, flops_per_step=step_flops, train_seconds=round(train_s, 1),
        eval_seconds=round(eval_s, 1),
        **({k: metrics[f'eval_{k}'] for k in ('diffusion_bpb', 'count_bpb', 'overflow_bpb',
                                              'recon_byte_acc', 'recon_patch_acc')}
           if system == 'bltdiff' else {})))
    print(json.dumps(rows[-1]), flush=True)
  return rows, runs, shared


def define_flags():
  """The script's flags (defined when it runs as a script, so that another
  benchmark can import it)."""
  flags.DEFINE_float('scale', 1.0, 'Multiplies the training FLOP budget.')
  flags.DEFINE_string('workdir', str(REPO / 'runs' / 'bench_likelihood'),
                      'Where the runs are trained (finished runs are reused).')
  flags.DEFINE_string('out', str(RESULTS / 'likelihood.json'), 'Results JSON.')


def main(argv):
  del argv
  args = flags.FLAGS
  if not CORPUS.is_dir():
    sys.exit(f'development corpus not found at {CORPUS}')
  begin = time.time()
  rows, _, shared = train_systems(args.scale, args.workdir)

  total = time.time() - begin
  for r in rows:
    r.update(scale=args.scale, seq_len=SEQ_LEN, batch_size=BATCH,
             threshold=shared['threshold'] if r['system'] == 'bltdiff' else None,
             bench_seconds=round(total, 1))
  os.makedirs(Path(args.out).parent, exist_ok=True)
  out = dict(rows=rows, machine=report.machine_description(),
             notes=(f'Development corpus, {SEQ_LEN}-byte rows, batch {BATCH}, equal training '
                    f'FLOPs (forward+backward of the loss, bltdiff.flops; optimizer and '
                    f'entropy model not counted); eval on the validation split, diffusion '
                    f'bounds with t over (0, 1]. This invocation took {total / 60:.1f} min '
                    f'(systems already trained in the work directory are reused, not '
                    f'retrained; train_seconds in the JSON is this invocation\'s).'))
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=2)
  report.write()
  plot(rows, str(Path(args.out).with_suffix('.png')))
  ref = next(r['bpb'] for r in rows if r['system'] == 'byte_mdlm')
  print(f'\nGutenberg, {SEQ_LEN}-byte rows, batch {BATCH}, equal training FLOPs; '
        f'{total / 60:.1f} min in all\n')
  print('| system | decoder | bpb (val) | vs byte MDLM | train FLOPs | steps | params | '
        'bytes/patch |')
  print('|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['system']} | {r['decoder_mode'] or '-'} | {r['bpb']:.3f} | "
          f"{100 * (r['bpb'] / ref - 1):+.1f}% | {r['train_flops']:.2e} | {r['steps']} | "
          f"{r['params'] / 1e6:.2f}M | {r['mean_patch_bytes']:.2f} |")
  return rows


if __name__ == '__main__':
  define_flags()
  app.run(main)

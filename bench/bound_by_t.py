"""Where in the diffusion bound each system gains as compute grows: the bound's
integrand at fixed masking times t, for trained runs of bench/scaling.py.

  python bench/bound_by_t.py [--runs=bltdiff_ar:base:1,bltdiff_ar:base:4,...]

A masked-diffusion bound (loglinear schedule, w(t) = 1/t) is an integral over
the masking time t in (0, 1]:

  bpb = ∫_0^1 f(t) dt (+ bltdiff's patch-count and overflow terms),
  f(t) = E[ Σ_masked −log2 p(x_unit | visible) ] / (t · n):

the bits per masked byte when a fraction t of the units (bytes for byte MDLM,
patches for bltdiff) is masked. f(t) near 0 is prediction from nearly the
whole context (for bltdiff: a patch written from its slot's latent alone,
with every other patch visible); near 1 it is prediction from almost nothing.
Comparing f(t) of one system at two budgets says at which mask rates more
compute pays: if bltdiff's gain at small t lags byte MDLM's, what limits it
is the patch written from one vector (the latent bottleneck and the local
decoder), not the latent model's global modelling.

The same integral is a low-variance estimate of the whole bound. The runs'
own evaluation draws t uniformly with t_min = 0, an unbiased estimate whose
variance diverges (logarithmically) at t -> 0: a draw with a tiny t and one
masked unit weighs 1/t. bltdiff has ~57 units per row against byte MDLM's
256, so a single draw can move its 64-draw mean by a few per cent, and every
run with the same seed shares the draws (and so the outlier). Per run this
script also gives `bound_fixed_t` = the midpoint integral + the run's patch
count and overflow terms (exact given the data), and from those the
bltdiff / byte MDLM ratio and log-log slopes over training FLOPs per
system and variant, beside the same from the runs' own bounds.

Each run (a directory of bench/scaling.py, `system:variant:budget`) is
evaluated on the validation batches its own evaluation used (its config's
seed and train.eval_batches), at --times (midpoints of equal bins, so their
mean is a midpoint-rule estimate of ∫ f, printed beside the run's bound as a
check), with --draws mask draws per batch. Writes
bench/results/bound_by_t.json (rows {system, variant, budget, t, f_t}; per run
the midpoint integral and the run's own bound) and bound_by_t.png, and
regenerates BENCHMARKS.md. Runs already in the JSON (same --times and
--draws) are kept, so runs can be added invocation by invocation.
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'bench'))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from scipy import stats  # noqa: E402

import report  # noqa: E402
import scaling  # noqa: E402
from bltdiff import data_chain, sharding  # noqa: E402
from bltdiff.training import evaluation, restore  # noqa: E402

RESULTS = REPO / 'bench' / 'results'
DEFAULT_RUNS = tuple(
    [f'{s}:base:{b:g}' for s in ('bltdiff_ar', 'byte_mdlm') for b in (0.25, 0.5, 1, 2, 4)]
    + [f'bltdiff_ar:decoder_x2:{b:g}' for b in (0.5, 1, 2, 4)]
    + [f'bltdiff_ar:visible_recon:{b:g}' for b in (1, 4)])
DEFAULT_TIMES = tuple(f'{(i + 0.5) / 10:g}' for i in range(10))


def integrand(workdir: str, times, draws: int) -> dict:
  """{t: f(t)} of one trained run, and its saved bound ('bound')."""
  loaded = restore.load_for_inference(workdir)
  config = data_chain.prepare_run_data(loaded.config, workdir)
  with config.unlocked():
    config.train.eval_t_samples = draws
  model, mesh = loaded.model, loaded.setup.mesh
  key_name = 'diffusion_bpb' if config.model.kind == 'latent_mdlm' else 'bpb'

  @jax.jit
  def at_t(params, batch, key, t):
    rows = batch['tokens'].shape[0]
    return model.loss(params, batch, key, False, t=jnp.full((rows,), t, jnp.float32))[1][key_name]

  out = {}
  with sharding.activate(mesh):
    for t in times:
      step = lambda params, batch, key, t=t: {'f': at_t(params, batch, key, float(t))}
      out[t] = evaluation.evaluate(model, loaded.params, config, config.data.prepared_dir,
                                   mesh, step, prefix='')['f']
  saved = sorted(Path(workdir).glob('eval_step_*.json'),
                 key=lambda p: int(p.stem.rsplit('_', 1)[1]))
  metrics = json.loads(saved[-1].read_text()) if saved else {}
  # bltdiff's patch count and overflow terms (0 for byte MDLM): exact given the data.
  exact_terms = metrics.get('eval_count_bpb', 0.0) + metrics.get('eval_overflow_bpb', 0.0)
  return dict(f=out, bound=metrics.get('eval_bpb'), exact_terms=exact_terms,
              train_flops=scaling_row_flops(workdir, loaded.step))


def scaling_row_flops(workdir: str, steps: int) -> float:
  """Training FLOPs of a run: its config's FLOPs per step x steps."""
  import likelihood
  from bltdiff.training import checkpointing
  return likelihood.step_flops_and_params(checkpointing.load_config(workdir))[0] * steps


def plot(runs, path: Path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for run in runs:
    ts = sorted(run['f'], key=float)
    style = '-' if run['budget'] >= 4 else '--'
    ax.plot([float(t) for t in ts], [run['f'][t] for t in ts], style, marker='o', ms=3,
            label=f"{run['system']} {run['variant']} {run['budget']:g}x")
  ax.set_xlabel('masking time t (fraction of units masked)')
  ax.set_ylabel('f(t): bits per masked byte')
  ax.set_title('The bound\'s integrand: bpb = ∫ f(t) dt')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def gains(runs) -> list:
  """Per system and variant with two budgets: f(small) / f(large) − 1 at each t,
  the relative gain of the larger budget."""
  out = []
  by = {}
  for run in runs:
    by.setdefault((run['system'], run['variant']), []).append(run)
  for (system, variant), group in sorted(by.items()):
    if len(group) < 2:
      continue
    lo, hi = min(group, key=lambda r: r['budget']), max(group, key=lambda r: r['budget'])
    out.append(dict(system=system, variant=variant, budgets=[lo['budget'], hi['budget']],
                    gain_by_t={t: lo['f'][t] / hi['f'][t] - 1 for t in lo['f'] if t in hi['f']}))
  return out


def comparisons(runs) -> list:
  """bltdiff / byte MDLM (base) at each budget and each system's and variant's
  log-log slope over training FLOPs, from `bound_fixed_t` and from the runs'
  own bounds."""
  lines = []
  by = {(r['system'], r['variant'], r['budget']): r for r in runs}
  for (system, variant, budget), r in sorted(by.items()):
    ref = by.get(('byte_mdlm', 'base', budget))
    if system == 'bltdiff_ar' and ref and r['bound'] is not None and ref['bound'] is not None:
      lines.append(f"- bltdiff {variant} / byte MDLM at {budget:g}x: "
                   f"{r['bound_fixed_t'] / ref['bound_fixed_t']:.3f} from the fixed-t "
                   f"estimates, {r['bound'] / ref['bound']:.3f} from the runs' bounds")
  lines += decoder_gap(by)
  groups = {}
  for r in runs:
    groups.setdefault((r['system'], r['variant']), []).append(r)
  for (system, variant), group in sorted(groups.items()):
    group = sorted(group, key=lambda r: r['budget'])
    if len(group) < 2 or any(r['bound'] is None for r in group):
      continue
    budgets = [r['budget'] for r in group]
    same = []  # the base recipes over exactly these budgets (the curves bend)
    for ref in dict.fromkeys([(system, 'base'), ('byte_mdlm', 'base')]):
      rows = [r for r in groups.get(ref, []) if r['budget'] in budgets]
      if ref != (system, variant) and len(rows) == len(budgets):
        same.append(f"{ref[0]} base {log_slope(rows, 'bound_fixed_t'):.3f}")
    lines.append(f"- {system} {variant}, slope over budgets "
                 + ', '.join(f'{b:g}' for b in budgets) + ': '
                 f"{log_slope(group, 'bound_fixed_t'):.3f} from the fixed-t estimates, "
                 f"{log_slope(group, 'bound'):.3f} from the runs' bounds"
                 + (f" (over the same budgets, fixed t: {', '.join(same)})" if same else ''))
  return lines


# The base recipe at seeds 0, 1, then bench/scaling.py's DECODER_GAP_SEEDS.
SEED_VARIANTS = ('base', 'seed_1') + tuple(f'seed_{s}' for s in scaling.DECODER_GAP_SEEDS)


def decoder_gap(by) -> list:
  """Issue 16's likelihood target, seed by seed: the diffusion decoder's fixed-t
  bound over the ar decoder's at each budget where both ran at a seed, the
  seeds' mean and its 95% t-interval (few seeds: a wide one); then the same
  mean and interval from the runs' own (t_min = 0, higher-variance) bounds."""
  lines = []
  for budget in sorted({b for (_, _, b) in by}):
    gaps = {key: {} for key in ('bound_fixed_t', 'bound')}
    for variant in SEED_VARIANTS:
      pair = [by.get((system, variant, budget)) for system in ('bltdiff_diffusion', 'bltdiff_ar')]
      for key, values in gaps.items():
        if all(pair) and all(r[key] is not None for r in pair):
          values[variant] = pair[0][key] / pair[1][key] - 1
    if not gaps['bound_fixed_t']:
      continue
    line = (f"- bltdiff diffusion / ar decoder at {budget:g}x, fixed t: "
            + ', '.join(f'{100 * g:+.1f}% ({v})' for v, g in gaps['bound_fixed_t'].items()))
    if len(gaps['bound_fixed_t']) >= 2:
      line += '; ' + mean_and_interval(gaps['bound_fixed_t'])
    if len(gaps['bound']) >= 2:
      line += f"; from the runs' own bounds, {len(gaps['bound'])} seeds: " + mean_and_interval(
          gaps['bound'])
    lines.append(line)
  return lines


def mean_and_interval(gaps: dict) -> str:
  """'mean +x%, 95% t-interval [lo, hi]' of relative gaps {seed variant: gap}."""
  values = np.array(list(gaps.values()))
  half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
  return (f"mean {100 * values.mean():+.1f}%, 95% t-interval "
          f"[{100 * (values.mean() - half):+.1f}%, {100 * (values.mean() + half):+.1f}%]")


def log_slope(rows, key: str) -> float:
  """−d log bpb / d log training FLOPs, least squares over rows sorted by budget."""
  rows = sorted(rows, key=lambda r: r['budget'])
  x = np.log([r['train_flops'] for r in rows])
  return -float(np.polyfit(x, np.log([r[key] for r in rows]), 1)[0])


def notes(runs, gain_rows) -> str:
  lines = [f"- {r['system']} {r['variant']} at {r['budget']:g}x: midpoint integral of f "
           f"{r['integral']:.3f}, whole bound {r['bound_fixed_t']:.3f} (fixed t), the run's "
           f"own {r['bound']:.3f}" for r in runs if r['bound'] is not None]
  lines += comparisons(runs)
  for g in gain_rows:
    lo, hi = g['budgets']
    lines.append(f"- {g['system']} {g['variant']}, {lo:g}x -> {hi:g}x, f's relative gain by t: "
                 + ', '.join(f"{float(t):g}: {100 * v:.1f}%" for t, v in g['gain_by_t'].items()))
  return '\n'.join(lines)


def main(argv):
  del argv
  args = flags.FLAGS
  workdir = Path(args.workdir)
  times = [f'{float(t):g}' for t in args.times]
  out_path = Path(args.out)
  old = json.loads(out_path.read_text()) if out_path.exists() else {}
  # Checked before any work: other times or draws would drop the runs already there.
  if old.get('runs') and (old.get('times'), old.get('draws')) != (times, args.draws):
    raise SystemExit(f"{out_path}: its runs were evaluated with --draws={old.get('draws')} "
                     f"--times={','.join(old.get('times') or [])}; use those or another --out")
  runs = []
  for spec in args.runs:  # --runs= (empty) only rewrites the notes from the JSON
    system, variant, budget = spec.split(':')
    directory = scaling.run_dir(workdir, system, variant, float(budget))
    if not (directory / 'checkpoints').exists():
      raise SystemExit(f'{spec}: no trained run in {directory}; run bench/scaling.py first')
    result = integrand(str(directory), times, args.draws)
    integral = sum(result['f'].values()) / len(times)
    runs.append(dict(system=system, variant=variant, budget=float(budget), f=result['f'],
                     integral=integral, bound_fixed_t=integral + result['exact_terms'],
                     bound=result['bound'], train_flops=result['train_flops']))
    print(f"{spec}: " + ', '.join(f'f({t})={v:.3f}' for t, v in result['f'].items())
          + f"; midpoint integral {runs[-1]['integral']:.3f}, bound {result['bound']}", flush=True)
  commands = []
  if old:  # runs evaluated before, at the same times and draws, are kept
    if old.get('times') == times and old.get('draws') == args.draws:
      commands = old.get('commands', [])
      done = {(r['system'], r['variant'], r['budget']) for r in runs}
      runs = [r for r in old['runs'] if (r['system'], r['variant'], r['budget']) not in done] + runs
  runs.sort(key=lambda r: (r['system'], r['variant'], r['budget']))
  gain_rows = gains(runs)
  rows = [dict(system=r['system'], variant=r['variant'], budget=r['budget'],
               **{f't={t}': round(v, 3) for t, v in r['f'].items()},
               bound_fixed_t=round(r['bound_fixed_t'], 3),
               bound=r['bound'] and round(r['bound'], 3)) for r in runs]
  command = ' '.join(['python', 'bench/bound_by_t.py'] + sys.argv[1:])
  commands = commands + [command] if command not in commands else commands  # each once
  out = dict(runs=runs, gains=gain_rows, rows=rows,
             notes=f"From {', '.join(f'`{c}`' for c in commands)}:\n" + notes(runs, gain_rows),
             times=times, draws=args.draws, machine=report.machine_description(),
             commands=commands)
  out_path.write_text(json.dumps(out, indent=1))
  plot(runs, out_path.with_suffix('.png'))
  if out_path.resolve().parent == RESULTS.resolve():  # --out may be relative
    report.write()
  print(out['notes'])


if __name__ == '__main__':
  flags.DEFINE_list('runs', list(DEFAULT_RUNS), 'system:variant:budget of bench/scaling.py runs.')
  flags.DEFINE_list('times', list(DEFAULT_TIMES), 'Masking times t (midpoints of equal bins).')
  flags.DEFINE_integer('draws', 1, 'Mask draws per validation batch at each t (the JSON\'s runs were '
                       'evaluated with 1; another value needs another --out).')
  flags.DEFINE_string('workdir', str(REPO / 'runs' / 'bench_likelihood'),
                      'Run directory of bench/scaling.py.')
  flags.DEFINE_string('out', str(RESULTS / 'bound_by_t.json'), 'Results JSON.')
  app.run(main)

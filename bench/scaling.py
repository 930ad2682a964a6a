"""Likelihood as compute grows: every system at several training budgets, a
fitted power law per system, and recipe variants of bltdiff and byte MDLM.

  python bench/scaling.py [--budgets=0.25,0.5,1,2] [--variants=base,...] [--systems=...]

The default grid (DEFAULT_SYSTEMS x DEFAULT_BUDGETS: bltdiff with the ar
decoder and byte MDLM, the pair the scaling target compares, at 4 budgets)
is meant to fit in an hour on a 2-core CPU from scratch (the JSON's
default_grid.estimate, from the runs' logged step rates); `--budgets=4`
adds the target's budget, `--systems=` the other systems.

Same data, split, configs and evaluation as bench/likelihood.py (its runs are
reused: the base variant at budget 1 is likelihood.py's run). A budget is a
multiple of likelihood.py's: the latent MDLM (ar) run's FLOPs per step x
BASE_STEPS; every run gets round(budget x that / its own FLOPs per step)
steps, FLOPs counted by bltdiff.flops on one forward+backward pass.

Variants (the recipe questions of the scaling issue), each a change to the
base config of the systems it names:
  lr_x0.5, lr_x2         learning rate halved / doubled (the same sweep for
                         bltdiff and byte MDLM: equal tuning effort)
  warmup_quarter         a warmup of a quarter of the steps (base: a tenth, at most 50)
  latent_heavy           more of the FLOPs in the latent transformer: a wider
                         latent, a smaller local encoder and decoder
  decoder_x2             the other way: a local decoder twice as wide and two
                         layers deep (is p(patch | h_i) the floor?)
  patch_3, patch_6       target bytes per patch 3 and 6 (calibrated; slots
                         scaled so the sequence still fits)
  hash_1024, hash_16384  hash n-gram tables of 1024 / 16384 buckets
  dropout_0.1            dropout 0.1 in the latent model (at equal FLOPs bltdiff has
                         ~4x byte MDLM's parameters and the corpus is a few MB: does
                         it overfit first?)
  data_half              half the training documents (data.train_fraction = 0.5,
                         the same validation split): if a system is data-limited
                         at a budget, halving its data costs it more
  seed_1                 the base recipe with seed 1 (initialization, data order,
                         evaluation draws): the run-to-run spread that the
                         variants' differences are read against
  seed_2 ... seed_7      the base recipe with seeds 2 to 7 (bltdiff ar and
                         diffusion decoders): more seeds for the gap between the
                         two (bench/bound_by_t.py's decoder_gap)
  slot_weighting         every masked slot weighs the same in training
                         (model.slot_weighting = 'slot', bltdiff/latent/train_objective.py)
                         instead of by its bytes; the bound reported is unchanged
  count_masking          training draws the number of masked slots, not t
                         (model.masking = 'count'): the same bound, estimated
                         with less variance
  decoder_x2_seed_1      decoder_x2 with seed 1: the spread of the recipe that
                         configs/latent_gutenberg.py takes
  width_x1.5             the main transformer (bltdiff's latent, byte MDLM's
                         byte network) 1.5x wider, ~2.25x its parameters, for
                         both systems: at a fixed size every budget only adds
                         steps, so this is the model size growing with the budget
  visible_recon          training adds the local decoder's NLL of the visible
                         patches from their own slots (model.visible_weight = 1,
                         bltdiff/latent/train_objective.py): a direct signal for
                         the encoder, which bench/bound_by_t.py finds unused
  visible_recon_seed_1   visible_recon with seed 1: its run-to-run spread
  visible_recon_decoder_x2
                         visible_recon with decoder_x2's local decoder: the
                         recipe configs/latent_gutenberg.py and owt.py combine
  one_stream, order_0, order_1, order_2, order_4
                         the `diffusion` decoder trained with one stream
                         (model.dec_two_stream = False: one random order and
                         count per pass; Ĥ(p) from its first pass) at reveal
                         order β = 8, 0 (uniform, plain masked diffusion), 1,
                         2, 4 (model.dec_order_bias); base: two streams at
                         β = 8, likelihood.DIFFUSION_RECIPE
  order_8_draws_2, order_8_draws_4
                         one_stream with its NELBO drawn 2 / 4 times per patch
                         (model.dec_nelbo_draws): less variance, fewer steps
  two_stream_order_2, two_stream_order_0
                         the base (two streams) at β = 2 and 0
  block_queries          the base with a second query per position trained on
                         what a sampler of fewer intra-patch steps sees
                         (model.dec_block_queries; 3L tokens a pass, not 2L)
  diffusion_visible_recon
                         the base with visible_recon's training term
  previous_symbol_visible_recon
                         the base (with the previous-symbol input) with
                         visible_recon's training term: the `diffusion`
                         decoder under the ar decoder's visible_recon recipe
  previous_symbol_visible_recon_seed_1
                         the same with seed 1 (against visible_recon_seed_1)
  lookahead_1, lookahead_2
                         the base with K = 1, 2 lookahead queries per
                         position (model.dec_lookahead: the d-th without the
                         d symbols before it, self-speculative decoding's
                         drafts after a redrawn symbol; (2+K)·L tokens a
                         pass, not 2L)
  no_previous_symbol     the base without the previous-symbol input
                         (model.dec_previous_symbol = False: no token embeds
                         the symbol before it, so a query reads the previous
                         byte only through attention), the recipe before it
                         had one. The `diffusion` variants above were
                         measured on that recipe and keep the input off
                         (BEFORE_PREVIOUS_SYMBOL): their runs stand, and
                         their rows are read against no_previous_symbol
Writes bench/results/scaling.json (rows {system, decoder_mode, variant, budget,
train_flops, bpb, params, steps, train_bpb} — train_bpb: the last logged
training bpb, read back from the run's metrics.jsonl, beside the validation bpb
to show overfitting — the default grid's training time estimated from the runs'
logged step rates (`default_grid_minutes`), and a fit per system and variant:
bpb = a · C^(−slope), least squares in log-log) and scaling.png, and
regenerates BENCHMARKS.md. Runs already trained are reused; the JSON says how
long this invocation took.
"""

import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'bench'))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import likelihood  # noqa: E402
import report  # noqa: E402

RESULTS = REPO / 'bench' / 'results'
SYSTEMS = {
    'bltdiff_ar': lambda: likelihood.latent_config('ar'),
    'bltdiff_parallel': lambda: likelihood.latent_config('parallel'),
    'bltdiff_diffusion': lambda: likelihood.latent_config('diffusion'),
    'byte_mdlm': lambda: likelihood.byte_config('byte_mdlm'),
    'byte_ar': lambda: likelihood.byte_config('byte_ar'),
}
LATENT = ('bltdiff_ar', 'bltdiff_parallel', 'bltdiff_diffusion')


def _scale_lr(factor):
  return lambda c: c.train.update(learning_rate=c.train.learning_rate * factor)


def _patch_target(mean):
  def change(c):
    c.patching.calibrate_target_mean = mean
    # Keep room for the patches: P_max ~ 1.6 x the expected count, as the base (80 for 4.5).
    c.patching.num_slots = int(math.ceil(1.6 * c.data.seq_len / mean / 8)) * 8
  return change


def _latent_heavy(c):
  c.model.update(dim=256, num_heads=8, mlp_dim=768, enc_dim=48, enc_heads=2, enc_mlp_dim=96,
                 dec_dim=48, dec_heads=2, dec_mlp_dim=96)


def _decoder_x2(c):
  c.model.update(dec_dim=128, dec_heads=4, dec_layers=2, dec_mlp_dim=384)


def _width_x1_5(c):
  # The main transformer (bltdiff's latent, byte MDLM's byte network) 1.5x wider,
  # ~2.25x its parameters, heads of the same size; everything else as the base.
  heads = c.model.num_heads * 3 // 2
  c.model.update(dim=c.model.dim * 3 // 2, num_heads=heads, mlp_dim=c.model.mlp_dim * 3 // 2)


def _visible_recon(c):
  c.model.update(visible_weight=1.0)


def _without_previous_symbol(c):
  c.model.update(dec_previous_symbol=False)


def _seed(seed):
  return lambda c: c.update(seed=seed)


def _one_stream(beta):
  return lambda c: c.model.update(dec_order_bias=beta, dec_two_stream=False,
                                  dec_entropy_head=False)


def _two_stream(beta):
  return lambda c: c.model.update(dec_order_bias=beta, dec_two_stream=True, dec_entropy_head=True)


def _combined(*changes):
  """A variant made of others' changes, applied in order."""
  def change(c):
    for f in changes:
      f(c)
  return change


# The seeds beyond 0 and 1 that only the two bltdiff decoders run (their bound gap).
DECODER_GAP_SEEDS = range(2, 8)

VARIANTS = {
    'base': ((), lambda c: None),
    'lr_x0.5': (('bltdiff_ar', 'byte_mdlm'), _scale_lr(0.5)),
    'lr_x2': (('bltdiff_ar', 'byte_mdlm'), _scale_lr(2.0)),
    # A quarter of the steps (base: at most a tenth, the 50-step default).
    'warmup_quarter': (('bltdiff_ar', 'byte_mdlm'),
                       lambda c: c.train.update(warmup_steps=10 ** 9)),
    'latent_heavy': (('bltdiff_ar',), _latent_heavy),
    'decoder_x2': (('bltdiff_ar',), _decoder_x2),
    'patch_3': (('bltdiff_ar',), _patch_target(3.0)),
    'patch_6': (('bltdiff_ar',), _patch_target(6.0)),
    'hash_1024': (('bltdiff_ar',), lambda c: c.model.update(hash_buckets=1024)),
    'hash_16384': (('bltdiff_ar',), lambda c: c.model.update(hash_buckets=16384)),
    'dropout_0.1': (('bltdiff_ar',), lambda c: c.model.update(dropout=0.1)),
    'data_half': (('bltdiff_ar', 'byte_mdlm'), lambda c: c.data.update(train_fraction=0.5)),
    'seed_1': (('bltdiff_ar', 'byte_mdlm', 'bltdiff_diffusion'), _seed(1)),
    **{f'seed_{s}': (('bltdiff_ar', 'bltdiff_diffusion'), _seed(s)) for s in DECODER_GAP_SEEDS},
    'slot_weighting': (('bltdiff_ar',), lambda c: c.model.update(slot_weighting='slot')),
    'count_masking': (('bltdiff_ar',), lambda c: c.model.update(masking='count')),
    'decoder_x2_seed_1': (('bltdiff_ar',), _combined(_decoder_x2, _seed(1))),
    'width_x1.5': (('bltdiff_ar', 'byte_mdlm'), _width_x1_5),
    'visible_recon': (('bltdiff_ar',), _visible_recon),
    'visible_recon_seed_1': (('bltdiff_ar',), _combined(_visible_recon, _seed(1))),
    'visible_recon_decoder_x2': (('bltdiff_ar',), _combined(_visible_recon, _decoder_x2)),
    # The `diffusion` decoder (base: likelihood.py's DIFFUSION_RECIPE, two streams at
    # β = 8) trained with one stream, at its reveal orders (bltdiff/latent/intra_patch.py:
    # earlier positions first with log-odds β per position apart; 0 the uniform
    # order of plain masked diffusion) ...
    'one_stream': (('bltdiff_diffusion',), _one_stream(8.0)),
    'order_0': (('bltdiff_diffusion',), _one_stream(0.0)),
    'order_1': (('bltdiff_diffusion',), _one_stream(1.0)),
    'order_2': (('bltdiff_diffusion',), _one_stream(2.0)),
    'order_4': (('bltdiff_diffusion',), _one_stream(4.0)),
    # ... and its NELBO drawn k times per patch (k x the decoder's rows: fewer steps);
    'order_8_draws_2': (('bltdiff_diffusion',),
                        _combined(_one_stream(8.0), lambda c: c.model.update(dec_nelbo_draws=2))),
    'order_8_draws_4': (('bltdiff_diffusion',),
                        _combined(_one_stream(8.0), lambda c: c.model.update(dec_nelbo_draws=4))),
    # two streams at other orders.
    'two_stream_order_2': (('bltdiff_diffusion',), _two_stream(2.0)),
    'two_stream_order_0': (('bltdiff_diffusion',), _two_stream(0.0)),
    # ... and with block queries (the predictions of fewer than L intra-patch steps).
    'block_queries': (('bltdiff_diffusion',), lambda c: c.model.update(dec_block_queries=True)),
    # ... and with visible_recon's term: does a latent that uses context give Ĥ(p) a spread?
    'diffusion_visible_recon': (('bltdiff_diffusion',), _visible_recon),
    # ... and with lookahead queries (speculative drafts after a redrawn symbol);
    **{f'lookahead_{k}': (('bltdiff_diffusion',),
                          lambda c, k=k: c.model.update(dec_lookahead=k)) for k in (1, 2)},
    # ... and without the symbol before each position as an input (the recipe before it).
    'no_previous_symbol': (('bltdiff_diffusion',), _without_previous_symbol),
    # The base (with that input) and visible_recon's term: the ar decoder's visible_recon.
    'previous_symbol_visible_recon': (('bltdiff_diffusion',), _visible_recon),
    'previous_symbol_visible_recon_seed_1': (('bltdiff_diffusion',),
                                             _combined(_visible_recon, _seed(1))),
}
# The `diffusion` variants measured before the recipe took model.dec_previous_symbol:
# each is its change on the recipe as it was (the input off), so its runs stand,
# and its rows are read against no_previous_symbol (`reference_variant`).
BEFORE_PREVIOUS_SYMBOL = ('one_stream', 'order_0', 'order_1', 'order_2', 'order_4',
                          'order_8_draws_2', 'order_8_draws_4', 'two_stream_order_2',
                          'two_stream_order_0', 'block_queries', 'diffusion_visible_recon')
for _name in BEFORE_PREVIOUS_SYMBOL:
  VARIANTS[_name] = (VARIANTS[_name][0], _combined(_without_previous_symbol, VARIANTS[_name][1]))


def reference_variant(variant: str) -> str:
  """The variant a row of `variant` is read against (its recipe without its change)."""
  return 'no_previous_symbol' if variant in BEFORE_PREVIOUS_SYMBOL else 'base'


def defined_rows(rows) -> tuple[list, list]:
  """(rows of variants still defined here, the variants of the others): a
  variant that became the base recipe (previous_symbol) is no longer one, and
  its rows, measured under its old name, are the base's."""
  kept = [r for r in rows if r.get('variant', 'base') in VARIANTS]
  return kept, sorted({r['variant'] for r in rows if r not in kept})


DEFAULT_SYSTEMS = ('bltdiff_ar', 'byte_mdlm')
DEFAULT_BUDGETS = (0.25, 0.5, 1.0, 2.0)


def base_budget_flops() -> float:
  """likelihood.py's budget at scale 1: the latent MDLM (ar) FLOPs/step x BASE_STEPS."""
  return likelihood.step_flops_and_params(likelihood.latent_config('ar'))[0] * \
      likelihood.BASE_STEPS


def run_dir(workdir: Path, system: str, variant: str, budget: float) -> Path:
  if variant == 'base':  # likelihood.py's layout: its scale-1 runs are these
    return workdir / f'scale_{budget:g}' / system
  return workdir / 'scaling' / f'{system}_{variant}_x{budget:g}'


def run(system, variant, budget, workdir: Path, shared: dict, unit: float) -> dict:
  config = SYSTEMS[system]()
  VARIANTS[variant][1](config)
  with config.unlocked():
    config.data.prepared_dir = shared['prepared_dir']
    if 'patching' in config:
      config.patching.entropy_model = shared['entropy_model']
  step_flops, params = likelihood.step_flops_and_params(config)
  steps = max(1, round(budget * unit / step_flops))
  print(f'== {system} {variant} x{budget:g}: {steps} steps', flush=True)
  warmup = 0.25 if variant == 'warmup_quarter' else 0.1
  metrics, _, _ = likelihood.run_system(
      system, config, str(run_dir(workdir, system, variant, budget)), steps, warmup)
  return dict(system='bltdiff' if system in LATENT else system,
              decoder_mode=system.split('_')[1] if system in LATENT else None, variant=variant,
              budget=budget, train_flops=step_flops * steps, bpb=metrics['eval_bpb'],
              params=params, steps=steps,
              mean_patch_bytes=metrics.get('eval_mean_patch_bytes'))


def logged(directory: Path, key: str) -> list:
  """Every value of `key` a run logged in its metrics.jsonl, in order ([] if none)."""
  path = directory / 'metrics.jsonl'
  if not path.exists():
    return []
  lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [m[key] for m in lines if key in m]


def median_step_rate(directories) -> float | None:
  """The median steps_per_sec over runs' logged windows, each run's first
  window left out (it holds the compilation): a system's typical training
  speed. A median, because a run paused by a load guard (kill -STOP while
  another benchmark times) or resumed in a later process has windows (and a
  wall clock) that say nothing about its cost."""
  rates = [rate for d in directories for rate in logged(d, 'steps_per_sec')[1:]]
  return float(np.median(rates)) if rates else None


def default_grid_minutes(rows, workdir: Path) -> dict | None:
  """The default grid's training time from scratch, estimated from logs:
  {minutes, steps_per_sec per system}, each run's steps at its system's
  `median_step_rate` over its base runs (compilation, evaluation and the
  shared entropy model, a few minutes in all, not counted). None until every
  run of the grid is there."""
  grid = [r for r in rows if r['variant'] == 'base' and r['budget'] in DEFAULT_BUDGETS
          and name_of(r).split(' ')[0] in DEFAULT_SYSTEMS]
  if len(grid) < len(DEFAULT_SYSTEMS) * len(DEFAULT_BUDGETS):
    return None
  rates = {}
  for system in DEFAULT_SYSTEMS:
    rates[system] = median_step_rate(
        [run_dir(workdir, system, 'base', r['budget']) for r in rows
         if r['variant'] == 'base' and name_of(r).split(' ')[0] == system])
  if None in rates.values():
    return None
  seconds = sum(r['steps'] / rates[name_of(r).split(' ')[0]] for r in grid)
  return dict(minutes=round(seconds / 60, 1), steps_per_sec={k: round(v, 3) for k, v in rates.items()})


def fit(rows) -> dict:
  """bpb = a · C^(−slope): least squares on (log C, log bpb), with the slope's
  standard error (None with fewer than 3 points)."""
  x = np.log([r['train_flops'] for r in rows])
  y = np.log([r['bpb'] for r in rows])
  slope, intercept = np.polyfit(x, y, 1)
  stderr = None
  if len(rows) >= 3:
    pred = slope * x + intercept
    s2 = np.sum((y - pred) ** 2) / (len(rows) - 2)
    stderr = float(math.sqrt(s2 / np.sum((x - x.mean()) ** 2)))
  return dict(slope=float(-slope), slope_stderr=stderr, log_a=float(intercept),
              budgets=[r['budget'] for r in rows], saturating=fit_saturating(rows))


def same_budget_slopes(groups: dict, name: str) -> dict:
  """{group: slope} of the base recipes (this system's and byte MDLM's) fitted
  over exactly the budgets of group `name`: a variant run at a few budgets is
  read against these, not against fits over other budgets (the curves bend)."""
  budgets = {r['budget'] for r in groups[name]}
  out = {}
  for ref in dict.fromkeys([name.split(' ')[0] + ' base', 'byte_mdlm base']):
    rows = [r for r in groups.get(ref, []) if r['budget'] in budgets]
    if ref != name and len(rows) == len(budgets):
      out[ref] = fit(rows)['slope']
  return out


def fit_saturating(rows) -> dict | None:
  """bpb = E + A · budget^(−rate), least squares (the model size is fixed and
  only the steps grow, so the loss levels off at a floor E: the capacity this
  size of model leaves, plus the data's entropy). With a floor, a system close
  to it has a flatter log-log slope at the same rate, so `slope` alone cannot
  tell a slower rate from a higher floor. Needs ≥ 4 budgets (3 parameters);
  None otherwise or if the fit does not converge. Returns {floor, amplitude,
  rate} and their standard errors (from the fit's covariance)."""
  if len(rows) < 4:
    return None
  from scipy.optimize import curve_fit
  x = np.array([r['budget'] for r in rows], np.float64)
  y = np.array([r['bpb'] for r in rows], np.float64)
  try:
    params, cov = curve_fit(lambda b, e, a, k: e + a * b ** (-k), x, y,
                            p0=(0.8 * y.min(), y.max() - y.min(), 0.5), maxfev=20000)
  except RuntimeError:
    return None
  errors = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else [None] * 3
  names = ('floor', 'amplitude', 'rate')
  out = {n: float(v) for n, v in zip(names, params)}
  out.update({f'{n}_stderr': (float(e) if e is not None else None) for n, e in zip(names, errors)})
  return out


def plot(rows, fits, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  for key, f in sorted(fits.items()):
    points = sorted((r for r in rows if name_of(r) == key), key=lambda r: r['train_flops'])
    x = np.array([r['train_flops'] for r in points])
    base = key.endswith(' base')
    line = ax.plot(x, [r['bpb'] for r in points], 'o' if base else 'x',
                   ms=5 if base else 4)[0]
    grid = np.geomspace(x.min(), x.max(), 20)
    ax.plot(grid, np.exp(f['log_a']) * grid ** (-f['slope']), '-' if base else ':',
            color=line.get_color(), lw=1.2 if base else 0.8,
            label=f"{key}: slope {f['slope']:.3f}")
    sat = f.get('saturating')
    if sat:  # the fit with a floor, over the same budgets
      budgets = grid / (x.min() / min(r['budget'] for r in points))
      ax.plot(grid, sat['floor'] + sat['amplitude'] * budgets ** (-sat['rate']), '--',
              color=line.get_color(), lw=0.8,
              label=f"{key}: floor {sat['floor']:.2f}, rate {sat['rate']:.2f}")
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('training FLOPs')
  ax.set_ylabel('validation bits per byte (bound for diffusion)')
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def name_of(row) -> str:
  return (row['system'] + (f"_{row['decoder_mode']}" if row['decoder_mode'] else '')
          + f" {row['variant']}")


def define_flags():
  """The script's flags (defined when it runs as a script, so that another
  benchmark can import it)."""
  flags.DEFINE_list('budgets', [f'{b:g}' for b in DEFAULT_BUDGETS],
                    'Budgets (x likelihood.py\'s).')
  flags.DEFINE_list('variants', ['base'], f'Variants: {", ".join(VARIANTS)}.')
  flags.DEFINE_list('systems', list(DEFAULT_SYSTEMS),
                    f'Systems for the base variant, of: {", ".join(SYSTEMS)}; given on the '
                    'command line, it also filters the systems another variant names.')
  flags.DEFINE_string('workdir', str(REPO / 'runs' / 'bench_likelihood'),
                      'Run directory, shared with bench/likelihood.py.')
  flags.DEFINE_string('out', str(RESULTS / 'scaling.json'), 'Results JSON (rows are merged '
                      'with the rows already there, so variants can be added run by run).')


def main(argv):
  del argv
  args = flags.FLAGS
  begin = time.time()
  workdir = Path(args.workdir)
  # The shared shards, entropy model and threshold: likelihood.py's scale-1 chain.
  _, _, shared = likelihood.train_systems(1.0, str(workdir), only=())
  unit = base_budget_flops()
  out_path = Path(args.out)
  new_rows = {}
  for variant in args.variants:
    systems = VARIANTS[variant][0] or args.systems
    if args['systems'].present:  # given on the command line: a filter on any variant's systems
      systems = [s for s in systems if s in args.systems]
    for system in systems:
      for budget in map(float, args.budgets):
        row = run(system, variant, budget, workdir, shared, unit)
        new_rows[(row['system'], row['decoder_mode'], row['variant'], row['budget'])] = row
        print(json.dumps(row), flush=True)
  # Read the JSON only now, after training: another invocation may have added rows
  # (and commands) while this one ran, and they are kept.
  previous = json.loads(out_path.read_text()) if out_path.exists() else {}
  kept, dropped = defined_rows(previous.get('rows', []))
  rows = {(r['system'], r['decoder_mode'], r['variant'], r['budget']): r for r in kept}
  rows.update(new_rows)
  rows = sorted(rows.values(), key=lambda r: (name_of(r), r['budget']))
  for r in rows:  # read back from every run directory, old rows too (kept if it is gone)
    directory = run_dir(workdir, name_of(r).split(' ')[0], r['variant'], r['budget'])
    r['train_bpb'] = (logged(directory, 'train_bpb') or [r.get('train_bpb')])[-1]
    r.pop('train_seconds', None)  # older rows: that invocation's time, 0 for a reused run
    r['reference'] = reference_variant(r['variant'])
  groups = {}
  for r in rows:
    groups.setdefault(name_of(r), []).append(r)
  fits = {k: fit(v) for k, v in groups.items() if len(v) >= 2}
  for name, f in fits.items():
    f['same_budgets'] = same_budget_slopes(groups, name)
  # Rows accumulate over invocations: every command that added some is kept.
  commands = previous.get('commands', [previous['command']] if 'command' in previous else [])
  commands.append(' '.join(['python', 'bench/scaling.py'] + sys.argv[1:]))
  if dropped:
    print(f'dropped the rows of variants no longer defined: {", ".join(dropped)}')
  out = dict(rows=rows, fits=fits, budget_unit_flops=unit, machine=report.machine_description(),
             commands=commands, seconds_this_invocation=round(time.time() - begin, 1),
             dropped_variants=sorted(set(previous.get('dropped_variants', [])) | set(dropped)),
             default_grid=dict(systems=list(DEFAULT_SYSTEMS), budgets=list(DEFAULT_BUDGETS),
                               estimate=default_grid_minutes(rows, workdir)))
  out_path.write_text(json.dumps(out, indent=1))
  plot(rows, fits, out_path.with_suffix('.png'))
  if out_path.resolve().parent == RESULTS.resolve():  # --out may be relative
    report.write()
  for k, f in sorted(fits.items()):
    print(f"{k}: slope {f['slope']:.3f}" + (f" ± {f['slope_stderr']:.3f}" if f['slope_stderr']
                                             else ''))


if __name__ == '__main__':
  define_flags()
  app.run(main)

"""Regenerates BENCHMARKS.md from the JSON files in bench/results/.

  python bench/report.py

Every benchmark script calls `write()` when it finishes, so BENCHMARKS.md only
ever shows figures that a script in this repository produced; each section
names the command that reproduces it. Nothing here is typed by hand.
"""

import json
import math
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'bench' / 'results'


def machine_description() -> str:
  """One line about the machine a benchmark ran on (stored in its JSON)."""
  import jax
  devices = jax.devices()
  kind = devices[0].device_kind if devices else 'unknown'
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, '
          f'{len(devices)} x {devices[0].platform}:{kind}, jax {jax.__version__}')


def _fmt(value, digits=3):
  if value is None:
    return '–'
  if isinstance(value, (list, tuple)):  # an interval
    return '[' + ', '.join(_fmt(v, digits) for v in value) + ']'
  if isinstance(value, float):
    return f'{value:.{digits}g}' if abs(value) < 1e4 else f'{value:.3e}'
  return str(value)


def table(rows: list[dict], columns: list[str]) -> str:
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join(_fmt(row.get(c, '')) for c in columns) + ' |')
  return '\n'.join(lines)


def _load(name: str):
  path = RESULTS / name
  return json.loads(path.read_text()) if path.exists() else None


def _machine(data) -> str:
  if isinstance(data, dict) and data.get('machine'):
    return f"Machine: {data['machine']}.\n\n"
  return ''


def section_data(data) -> str:
  rows = data.get('rows', [])
  return (f"Packed-batch throughput of the Grain pipeline (headline: {data['mb_per_s']} MB/s, "
          f"{data['workers']} workers, {data['batch_bytes']} bytes per batch, "
          f"{data.get('corpus', '')}); preparing shards ran at "
          f"{data.get('prepare_mb_per_s', '?')} MB/s.\n\n"
          + table(rows, ['corpus', 'workers', 'batch_size', 'seq_len', 'batch_bytes', 'mb_per_s']))


def section_patching(data) -> str:
  return (f"Patch sizes of every mode on the development corpus (ℓ_max = 8; entropy modes "
          f"calibrated to 4.5 bytes per patch). Entropy model throughput: "
          f"{_fmt(data.get('entropy_bytes_per_s', 0.0))} bytes/s.\n\n"
          + table(data['rows'], ['label', 'mode', 'threshold', 'mean_patch_bytes', 'p50', 'p90',
                                 'max']))


def with_interval_text(row) -> dict:
  """A sampling row with its gen-bpb interval as text, for a table."""
  ci = row.get('gen_bpb_ci')
  return dict(row, gen_bpb_ci=f"[{ci[0]:.3f}, {ci[1]:.3f}]") if ci else dict(row)


def section_sampling_variant(data) -> str:
  """The sampling benchmark with bltdiff (ar) from a recipe variant's run: its
  notes (the headline against the same byte MDLM and byte AR rows) and the rows
  of the frontier's three systems; the other decoders' rows are the base run's."""
  rows = [with_interval_text(r) for r in data['rows']
          if r.get('decoder_mode') in (None, 'ar') and r.get('gen_bpb_ci')]
  return (data.get('notes', '') + '\n\n'
          + table(rows, ['system', 'decoder_mode', 'sampler', 'steps', 'option', 'steps_taken',
                         'gen_bpb', 'gen_bpb_ci', 'unigram_entropy', 'repeat_8gram',
                         'sample_bytes', 'patch_bytes', 'row_latent_calls', 'flops_per_byte',
                         'wall_s_per_sample']))


def section_diffusion_decoder(data) -> str:
  """The local decoders side by side (issue 16): the notes on the diffusion
  decoder and the cached rows of bltdiff's three decoders, all measured in the
  run(s) this JSON records (its other rows are the copied full run's)."""
  rows = [with_interval_text(r) for r in data['rows']
          if r['system'] == 'bltdiff' and r['sampler'] == 'cached' and r.get('gen_bpb_ci')]
  return (data.get('intra_patch_notes', '') + '\n\n'
          + table(rows, ['decoder_mode', 'steps', 'option', 'gen_bpb', 'gen_bpb_ci',
                         'unigram_entropy', 'repeat_8gram', 'sample_bytes', 'patch_bytes',
                         'decoder_passes_per_byte', 'flops_per_byte', 'wall_s_per_sample'])
          + '\n\n![intra-patch steps against the estimated patch entropy]'
            '(bench/results/sampling_diffusion_decoder_intra_patch.png)')


def section_sampling(data) -> str:
  rows = [with_interval_text(r) for r in data['rows']]
  ev = data.get('evaluator', {})
  evaluator = (f"Evaluator: byte AR, {ev['params'] / 1e6:.2f}M parameters, {ev['steps']} steps "
               f"({ev['trained_flops_vs_models']:.1f}x the models' training FLOPs), validation "
               f"{ev['validation_bpb']:.3f} bpb. Models (validation bpb): "
               + ', '.join(f"{k} {v['bpb']:.3f}" for k, v in data.get('models', {}).items())
               + f". This invocation took {data['total_seconds'] / 60:.0f} min "
               f"({data['train_seconds'] / 60:.0f} min training; runs already trained in the "
               f"work directory are reused).\n\n") if ev else ''
  return (data.get('notes', '') + '\n\n' + evaluator
          + table(rows, ['system', 'decoder_mode', 'sampler', 'steps', 'option', 'steps_taken',
                         'num_samples', 'gen_bpb', 'gen_bpb_ci', 'unigram_entropy',
                         'repeat_8gram', 'sample_bytes', 'patch_bytes', 'latent_calls',
                         'row_latent_calls',
                         'decoder_passes_per_byte', 'flops_per_byte', 'wall_s_per_sample'])
          + '\n\nSamples: `bench/results/samples/` (the first samples of every row).'
          + '\n\n![gen-bpb against FLOPs per byte](bench/results/sampling_flops.png)'
          + ('\n\n![gen-bpb against steps: distilled students and their teacher]'
             '(bench/results/sampling_steps.png)'
             if any(r['system'] == 'bltdiff_distilled' for r in data['rows']) else '')
          + ('\n\n![intra-patch steps against the estimated patch entropy]'
             '(bench/results/sampling_intra_patch.png)' if data.get('intra_patch_plan') else ''))


def section_rows(columns):
  def render(data) -> str:
    rows = data['rows'] if isinstance(data, dict) else data
    notes = data.get('notes', '') if isinstance(data, dict) else ''
    return (notes + '\n\n' if notes else '') + table(rows, columns)
  return render


def _inline(text: str) -> str:
  """A generated or reference text on one markdown line, as code."""
  text = text.replace('`', "'").replace('\r', '').replace('\n', ' \u23ce ')
  return '`' + ''.join(c if c.isprintable() else '\ufffd' for c in text) + '`'


def task_examples(data) -> str:
  """The first held-out example: its source, its reference and each row's generation."""
  shown = data.get('shown')
  if not shown or not shown['sources']:
    return ''
  lines = [f"- source: {_inline(shown['sources'][0])}",
           f"- reference: {_inline(shown['references'][0])}"]
  for r in data['rows']:
    name = ' '.join(str(x) for x in (r['system'], r['sampler'], r['steps'] or '') if x != '')
    lines.append(f"- {name}: {_inline(r['generations'][0])}")
  return '\n\nThe first held-out example and what each row wrote:\n\n' + '\n'.join(lines)


def section_tasks(data) -> str:
  columns = ['system', 'sampler', 'steps', 'rougeL', 'rougeL_ci', 'gen_bpb', 'gen_bpb_ci',
             'distinct_1', 'distinct_2', 'distinct_3', 'self_bleu', 'repeat_8gram', 'mean_bytes',
             'ended', 'latent_calls', 'wall_s_per_example']
  return (data['notes'] + '\n\nHeld-out pairs (the `data` row: the reference targets themselves; '
          'intervals: 95% bootstrap over examples):\n\n' + table(data['rows'] + [data['data']], columns)
          + '\n\nTraining (eval_bpb: bits per target symbol on validation pairs, a bound for the '
          'diffusion models; the evaluator is not a system under test):\n\n'
          + table(data['train'], ['system', 'steps', 'flops_per_step', 'train_flops', 'params',
                                  'eval_bpb', 'train_seconds'])
          + task_examples(data))


def section_entropy(data) -> str:
  estimate = data['owt_estimate']
  return (data['notes'] + '\n\n'
          + table(data['rows'], ['devices', 'rows_per_call', 'chunk_len', 'overlap',
                                 'rows_bytes_per_s', 'corpus_bytes', 'corpus_bytes_per_s'])
          + '\n\nOpenWebText, estimated from FLOPs (not measured):\n\n'
          + table([estimate], ['slice', 'chips', 'params', 'flops_per_scored_byte', 'utilisation',
                               'bytes_per_s_per_chip', 'corpus_bytes', 'hours']))


def section_scaling(data) -> str:
  """The fits, their ratio extrapolated to the largest budget asked for (4x),
  and the rows."""
  fits = data['fits']
  systems = sorted({r['system'] + (f"_{r['decoder_mode']}" if r['decoder_mode'] else '')
                    for r in data['rows']})
  budgets = sorted({r['budget'] for r in data['rows']})
  commands = data.get('commands', [data['command']] if data.get('command') else [])
  lines = ["Each bpb here is the run's own evaluation (t drawn with t_min = 0: unbiased, "
           'but its variance diverges at t -> 0, and every run of one seed shares the draws); '
           '`python bench/bound_by_t.py` (its section below) integrates the same runs at fixed '
           't, a lower-variance estimate, and gives the ratios and slopes from both. '
           f"Rows so far: {', '.join(systems)} at budgets {', '.join(f'{b:g}' for b in budgets)}"
           + (f" (from {', '.join(f'`{c}`' for c in commands)})" if commands else '')
           + '.', '']
  grid = data.get('default_grid')
  if grid:
    took = grid.get('estimate')
    lines[0] += (f" The default command runs {' and '.join(grid['systems'])} at budgets "
                 f"{', '.join(f'{b:g}' for b in grid['budgets'])}"
                 + (f": about {took['minutes']:.0f} min of training from scratch at the runs' "
                    'median logged step rates (' + ', '.join(
                        f'{k} {v:.2f} steps/s' for k, v in took['steps_per_sec'].items())
                    + '; compilation, evaluation and the entropy model not counted)'
                    if took else '') + '; finished runs are reused.')
  base_bpb = {(r['system'], r['budget']): r['bpb'] for r in data['rows']
              if r['variant'] == 'base' and r['decoder_mode'] in (None, 'ar')}
  measured = [(b, base_bpb[('bltdiff', b)] / base_bpb[('byte_mdlm', b)]) for b in budgets
              if ('bltdiff', b) in base_bpb and ('byte_mdlm', b) in base_bpb]
  if measured:
    lines.insert(1, '- Measured bltdiff (ar) / byte MDLM bound ratio: ' + ', '.join(
        f'{r:.3f} at {b:g}x' for b, r in measured) + '.')
  for name, f in sorted(fits.items()):
    err = f" ± {f['slope_stderr']:.3f}" if f.get('slope_stderr') else ''
    same = f.get('same_budgets') or {}
    lines.append(f"- {name}: bpb = a · C^(−slope), slope {f['slope']:.3f}{err} over budgets "
                 f"{', '.join(f'{b:g}' for b in f['budgets'])} (x {data['budget_unit_flops']:.3g} "
                 'FLOPs)' + ('; over the same budgets ' + ', '.join(
                     f'{k} {v:.3f}' for k, v in same.items()) if same else ''))
  for name, f in sorted(fits.items()):
    sat = f.get('saturating')
    if sat:
      err = lambda k: f" ± {sat[k + '_stderr']:.2f}" if sat.get(k + '_stderr') is not None else ''
      undetermined = sat['floor'] < 0 or (sat.get('floor_stderr') or 0) > 0.5
      lines.append(f"- {name}, with a floor: bpb = E + A · budget^(−rate), E {sat['floor']:.2f}"
                   f"{err('floor')}, rate {sat['rate']:.2f}{err('rate')}"
                   + (': no floor is determined within these budgets (a power law fits)'
                      if undetermined else ''))
  def row_of(system, decoder_mode, variant, budget):
    return next((b for b in data['rows'] if (b['system'], b['decoder_mode'], b['variant'],
                                             b['budget']) == (system, decoder_mode, variant,
                                                              budget)), None)

  for r in data['rows']:  # each variant against the base recipe, a seed against seed 0
    name = r['system'] + (f"_{r['decoder_mode']}" if r['decoder_mode'] else '')
    seed_of = seed_zero_variant(r['variant'])
    reference = r.get('reference', 'base')  # the recipe the variant changes
    ref = row_of(r['system'], r['decoder_mode'], seed_of or reference, r['budget'])
    if r['variant'] != reference and ref:
      against = (f"seed 0's {ref['bpb']:.3f}" if seed_of else
                 f"the base recipe's {ref['bpb']:.3f}" if reference == 'base' else
                 f"{reference}'s {ref['bpb']:.3f}")
      lines.append(f"- {name} {r['variant']} at {r['budget']:g}x: {r['bpb']:.3f} against "
                   f"{against} ({100 * (r['bpb'] / ref['bpb'] - 1):+.1f}%)")
  for r in data['rows']:  # the ratio to byte MDLM over both seeds, where both ran
    seed_of = seed_zero_variant(r['variant'])
    if r['system'] != 'bltdiff' or not seed_of:
      continue
    mine = [row_of('bltdiff', r['decoder_mode'], v, r['budget']) for v in (seed_of, r['variant'])]
    theirs = [row_of('byte_mdlm', None, v, r['budget']) for v in ('base', 'seed_1')]
    if all(mine) and all(theirs):
      ratios = [a['bpb'] / b['bpb'] for a, b in zip(mine, theirs)]
      mean = (sum(a['bpb'] for a in mine) / 2) / (sum(b['bpb'] for b in theirs) / 2)
      lines.append(f"- bltdiff ({seed_of} recipe) / byte MDLM at {r['budget']:g}x, seed by seed: "
                   f"{ratios[0]:.3f} (seed 0), {ratios[1]:.3f} (seed 1); of the two seeds' "
                   f"means {mean:.3f}")
  for budget in budgets:  # equal tuning effort: each system at its best of the same sweep
    best = {}
    for system in ('bltdiff', 'byte_mdlm'):
      tried = [row_of(system, 'ar' if system == 'bltdiff' else None, v, budget)
               for v in TUNING_VARIANTS]
      tried = [r for r in tried if r]
      if len(tried) > 1:
        best[system] = (min(tried, key=lambda r: r['bpb']), [r['variant'] for r in tried])
    if len(best) == 2 and best['bltdiff'][1] == best['byte_mdlm'][1]:
      (mine, tried), (theirs, _) = best['bltdiff'], best['byte_mdlm']
      lines.append(f"- Tuned per system at {budget:g}x (the best of {', '.join(tried)} for "
                   f"each): bltdiff {mine['variant']} {mine['bpb']:.3f}, byte MDLM "
                   f"{theirs['variant']} {theirs['bpb']:.3f}, ratio "
                   f"{mine['bpb'] / theirs['bpb']:.3f}")
  lines += carried_tuning(row_of, budgets) + size_frontier(row_of, budgets)
  base = {n.split(' ')[0]: f for n, f in fits.items() if n.endswith(' base')}
  if 'bltdiff_ar' in base and 'byte_mdlm' in base:
    at = 4 * data['budget_unit_flops']
    value = {n: math.exp(f['log_a']) * at ** (-f['slope']) for n, f in base.items()}
    measured = any(r['budget'] >= 4 for r in data['rows'])
    lines.append(f"- At 4x ({at:.3g} FLOPs), {'from the fits' if not measured else 'fitted'}"
                 f"{' (an extrapolation: no 4x run yet)' if not measured else ''}: bltdiff "
                 f"{value['bltdiff_ar']:.3f}, byte MDLM {value['byte_mdlm']:.3f}, ratio "
                 f"{value['bltdiff_ar'] / value['byte_mdlm']:.3f}.")
  return ('\n'.join(lines) + '\n\n'
          + table(data['rows'], ['system', 'decoder_mode', 'variant', 'budget', 'train_flops',
                                 'bpb', 'train_bpb', 'params', 'steps']))


# bench/scaling.py's learning-rate and warmup sweep, the same for both systems.
TUNING_VARIANTS = ('base', 'lr_x0.5', 'lr_x2', 'warmup_quarter')
# The model sizes of both systems in bench/scaling.py (variant width_x1.5: the
# main transformer 1.5x wider).
SIZE_VARIANTS = ('base', 'width_x1.5')
SYSTEM_MODES = (('bltdiff', 'ar'), ('byte_mdlm', None))


def carried_tuning(row_of, budgets) -> list:
  """Each system's best of the tuning sweep at the smallest budget where the
  whole sweep ran for both, read at each larger budget where both winners
  ran: tuning at a small budget and carrying it up, the same for both."""
  for tuned_at in budgets:
    tried = {s: [r for r in (row_of(s, m, v, tuned_at) for v in TUNING_VARIANTS) if r]
             for s, m in SYSTEM_MODES}
    if all(len(t) == len(TUNING_VARIANTS) for t in tried.values()):
      break
  else:
    return []
  best = {s: min(t, key=lambda r: r['bpb'])['variant'] for s, t in tried.items()}
  lines = []
  for budget in budgets:
    if budget <= tuned_at:
      continue
    rows = {s: row_of(s, m, best[s], budget) for s, m in SYSTEM_MODES}
    if all(rows.values()):
      mine, theirs = rows['bltdiff'], rows['byte_mdlm']
      lines.append(f"- Tuned at {tuned_at:g}x, carried to {budget:g}x: bltdiff {best['bltdiff']} "
                   f"{mine['bpb']:.3f}, byte MDLM {best['byte_mdlm']} {theirs['bpb']:.3f}, ratio "
                   f"{mine['bpb'] / theirs['bpb']:.3f}")
  return lines


def size_frontier(row_of, budgets) -> list:
  """The model size growing with the budget: at each budget where every
  system ran every size, each system's better size; the slope from the
  smallest to the largest such budget, beside the fixed-size (base) slope
  over the same two budgets, and the bltdiff / byte MDLM ratio of the best."""
  both = [b for b in budgets if all(row_of(s, m, v, b) for s, m in SYSTEM_MODES
                                     for v in SIZE_VARIANTS)]
  if len(both) < 2:
    return []
  lo, hi = both[0], both[-1]
  best = {(s, b): min((row_of(s, m, v, b) for v in SIZE_VARIANTS), key=lambda r: r['bpb'])
          for s, m in SYSTEM_MODES for b in both}
  slope = lambda a, b: math.log(a['bpb'] / b['bpb']) / math.log(hi / lo)
  parts = []
  for s, m in SYSTEM_MODES:
    grown = slope(best[(s, lo)], best[(s, hi)])
    fixed = slope(row_of(s, m, 'base', lo), row_of(s, m, 'base', hi))
    parts.append(f"{s} {best[(s, lo)]['variant']} at {lo:g}x, {best[(s, hi)]['variant']} at "
                 f"{hi:g}x: slope {grown:.3f} (fixed base size {fixed:.3f})")
  ratios = ', '.join(f"{best[('bltdiff', b)]['bpb'] / best[('byte_mdlm', b)]['bpb']:.3f} at {b:g}x"
                     for b in both)
  return [f"- Model size chosen per budget (the better of {', '.join(SIZE_VARIANTS)}): "
          + '; '.join(parts) + f"; bltdiff / byte MDLM {ratios}"]


def seed_zero_variant(variant: str):
  """The seed-0 variant a seed-1 variant repeats ('seed_1' -> 'base',
  'decoder_x2_seed_1' -> 'decoder_x2'), or None."""
  if variant == 'seed_1':
    return 'base'
  return variant[:-len('_seed_1')] if variant.endswith('_seed_1') else None


SECTIONS = [
    ('Data pipeline', 'data_pipeline.json', 'python bench/data_pipeline.py', section_data,
     'data_pipeline.png'),
    ('Patching', 'patching.json', 'python bench/patching.py', section_patching, 'patching.png'),
    ('Likelihood (bits per byte)', 'likelihood.json', 'python bench/likelihood.py',
     section_rows(['system', 'decoder_mode', 'bpb', 'train_flops', 'params', 'mean_patch_bytes']),
     'likelihood.png'),
    ('Likelihood as compute grows', 'scaling.json', 'python bench/scaling.py',
     section_scaling, 'scaling.png'),
    ('Where the bound gains: its integrand by masking time', 'bound_by_t.json',
     'python bench/bound_by_t.py',
     lambda data: section_rows(['system', 'variant', 'budget']
                               + [f't={t}' for t in data['times']]
                               + ['bound_fixed_t', 'bound'])(data), 'bound_by_t.png'),
    ('Speed and quality of sampling', 'sampling.json', 'python bench/sampling.py',
     section_sampling, 'sampling_wall.png'),
    ('Sampling from the visible_recon recipe', 'sampling_visible_recon.json',
     'cp bench/results/sampling.json bench/results/sampling_visible_recon.json && '
     'python bench/sampling.py --bltdiff_variant=visible_recon --systems=bltdiff_ar '
     '--out=bench/results/sampling_visible_recon.json', section_sampling_variant,
     'sampling_visible_recon_flops.png'),
    ('The diffusion local decoder: reveal order and intra-patch steps',
     'sampling_diffusion_decoder.json',
     'cp bench/results/sampling.json bench/results/sampling_diffusion_decoder.json && '
     'python bench/sampling.py --samplers=cached '
     '--systems=bltdiff_ar,bltdiff_parallel,bltdiff_diffusion '
     '--out=bench/results/sampling_diffusion_decoder.json && '
     'for v in one_stream order_2 block_queries diffusion_visible_recon '
     'previous_symbol_visible_recon previous_symbol_visible_recon_seed_1 seed_1 lookahead_1; '
     'do python '
     'bench/sampling.py --bltdiff_variant=$v --samplers=cached --systems=bltdiff_diffusion '
     '--out=bench/results/sampling_diffusion_decoder.json; done && for v in visible_recon '
     'visible_recon_seed_1 seed_1; do python bench/sampling.py '
     '--bltdiff_variant=$v --samplers=cached --systems=bltdiff_ar '
     '--out=bench/results/sampling_diffusion_decoder.json; done',
     section_diffusion_decoder,
     'sampling_diffusion_decoder_wall.png'),
    ('Conditional generation (passage -> next passage)', 'tasks.json', 'python bench/tasks.py',
     section_tasks, 'tasks.png'),
    ('Training throughput', 'train_throughput.json', 'python bench/train_throughput.py',
     section_rows(['system', 'batch_size', 'seq_len', 'bytes_per_s',
                   'flops_per_step_per_device', 'mfu', 'device']),
     'train_throughput.png'),
    ('Entropy scoring throughput', 'entropy_throughput.json', 'python bench/entropy_throughput.py',
     section_entropy, 'entropy_throughput.png'),
]


def render() -> str:
  parts = ['# Benchmarks', '',
           'Generated by `python bench/report.py` from `bench/results/*.json`; each section '
           'names the command that produced its figures. Rerun a command to refresh its section.',
           '']
  for title, name, command, renderer, plot in SECTIONS:
    data = _load(name)
    parts.append(f'## {title}')
    parts.append('')
    parts.append(f'Command: `{command}`')
    parts.append('')
    if data is None:
      parts.append(f'Not run yet: `bench/results/{name}` is missing.')
    else:
      parts.append(_machine(data) + renderer(data))
      if (RESULTS / plot).exists():
        parts.append('')
        parts.append(f'![{title}](bench/results/{plot})')
    parts.append('')
  return '\n'.join(parts)


HEADLINE_START = '<!-- headline: generated by bench/report.py from bench/results/sampling.json -->'
HEADLINE_END = '<!-- /headline -->'


def readme_headline() -> str | None:
  """README's headline block: the sampling benchmark's computed notes."""
  data = _load('sampling.json')
  if data is None or not data.get('headline'):
    return None
  return (f"{HEADLINE_START}\n**Measured** (`python bench/sampling.py`, small models trained "
          f"for minutes on a 2-core CPU; every row, interval and sample in "
          f"[BENCHMARKS.md](BENCHMARKS.md)): {data['headline']}\n{HEADLINE_END}")


def write():
  (ROOT / 'BENCHMARKS.md').write_text(render())
  headline, readme = readme_headline(), ROOT / 'README.md'
  text = readme.read_text()
  if headline and HEADLINE_START in text and HEADLINE_END in text:
    before, rest = text.split(HEADLINE_START, 1)
    readme.write_text(before + headline + rest.split(HEADLINE_END, 1)[1])


if __name__ == '__main__':
  write()
  print(f'wrote {ROOT / "BENCHMARKS.md"}')

r"""The task evaluation command: --mode=eval_task.

  python -m bltdiff.main --config=configs/demo.py --workdir=RUN --mode=eval_task \
      [--task_runs=RUN2,RUN3] [--evaluator=EVAL_RUN] [--task_settings=cached:16,adaptive:64] \
      [--num_examples=64] [--task_batch=16] [--top_p=0.9 ...] [--output=PREFIX] [--seed=0]

Every run (trained with data.format='pairs': byte AR, byte MDLM or latent
MDLM) writes targets for the same held-out sources: the first
--num_examples pairs of the validation split of --workdir's prepared pairs,
laid out by the runs' shared layout (data.seq_len, max_source_share,
source_keep must agree). Each diffusion run is sampled with every
--task_settings entry (the other sampler options: the run's config.sample,
then the sampling flags); byte AR decodes once, cached. The figures of
each (system, setting) are `bltdiff.task_eval.score`'s; the reference
targets get the same figures but ROUGE (the `data` entry).

Writes PREFIX.json (default WORKDIR/eval_task.json: rows, data, per-example
values for paired comparisons) and PREFIX.png (ROUGE-L and gen-bpb against
wall time per example), and prints a table.
"""

import dataclasses
import json
import os
import platform

import jax
from etils import epath

from bltdiff import task_eval, task_metrics, text
from bltdiff.errors import ConfigError
from bltdiff.sample_flags import OUTPUT, SEED, option_overrides
from bltdiff.sampling.options import SamplerOptions
from bltdiff.task_flags import EVALUATOR, NUM_EXAMPLES, SETTINGS, TASK_BATCH, TASK_RUNS
from bltdiff.training import restore

LAYOUT_FIELDS = ('seq_len', 'max_source_share', 'source_keep')
SHOWN = 3  # generations kept as text in each row of the JSON, for reading
TABLE = ('system', 'sampler', 'steps', 'rougeL', 'gen_bpb', 'distinct_2', 'self_bleu',
         'repeat_8gram', 'mean_bytes', 'ended', 'latent_calls', 'wall_s_per_example')


def parse_settings(entries) -> list[tuple[str, int]]:
  """['cached:16', 'adaptive:64'] -> [('cached', 16), ('adaptive', 64)]."""
  out = []
  for entry in entries:
    sampler, _, steps = entry.partition(':')
    if not steps.isdigit() or int(steps) <= 0:
      raise ConfigError(f'--task_settings: {entry!r} is not SAMPLER:STEPS with STEPS a positive integer')
    out.append((sampler, int(steps)))
  return out


def setting_options(base: SamplerOptions, sampler: str, steps: int) -> SamplerOptions:
  """base with the setting's sampler and steps (the step cap of data-dependent samplers)."""
  capped = sampler in ('adaptive', 'confidence')
  options = dataclasses.replace(base, sampler=sampler, steps=steps,
                                max_steps=steps if capped else base.max_steps)
  options.check(where='--task_settings ')
  return options


def system_name(config) -> tuple[str, str | None]:
  kind = config.model.kind
  return ('bltdiff', config.model.decoder_mode) if kind == 'latent_mdlm' else (kind, None)


def check_same_rows(workdirs, data_configs):
  """ConfigError unless every run was trained on pairs with one row layout."""
  first = data_configs[0]
  for w, data in zip(workdirs, data_configs):
    if data.get('format', 'text') != 'pairs':
      raise ConfigError(f'data.format: {w} was trained on {data.get("format", "text")!r}; '
                        f'eval_task needs runs trained on pairs')
    for field in LAYOUT_FIELDS:
      if data[field] != first[field]:
        raise ConfigError(f'data.{field}: {w} has {data[field]!r}, {workdirs[0]} '
                          f'{first[field]!r}; eval_task compares runs on the same rows')


def evaluate_runs(workdirs, *, evaluator_dir=None, settings=(('cached', 64),), num_examples=64,
                  batch_size=16, overrides=None, seed=0) -> dict:
  """The command's results for trained pairs runs (module docstring).
  settings: [(sampler, steps)] for every diffusion run, or {model kind: [...]}."""
  loaded = [restore.load_for_inference(w) for w in workdirs]
  check_same_rows(workdirs, [run.config.data for run in loaded])
  first = loaded[0].config.data
  prepared = first.prepared_dir
  data_rows = task_eval.held_out_rows(first, prepared, num_examples, batch_size)
  rows_with_targets, references, _ = task_eval.target_rows(data_rows['tokens'],
                                                           data_rows['source_len'])
  sources = [text.render(r[:s]) for r, s in zip(data_rows['tokens'][:SHOWN],
                                                  data_rows['source_len'][:SHOWN])]
  evaluator = restore.load_for_inference(evaluator_dir) if evaluator_dir else None
  if evaluator is not None and evaluator.config.model.kind != 'byte_ar':
    raise ConfigError(f'--evaluator: {evaluator_dir} holds {evaluator.config.model.kind}, not byte_ar')

  def nats_of(rows):
    if evaluator is None:
      return None
    return task_eval.evaluator_nats(evaluator.model, evaluator.params, rows,
                                    int(evaluator.config.data.seq_len), batch_size)

  data_figures, data_examples = task_eval.score(rows_with_targets, references,
                                                nats_of(rows_with_targets))
  data_figures = {k: v for k, v in data_figures.items() if not k.startswith('rouge')}
  result = {'examples': num_examples, 'seq_len': int(first.seq_len), 'prepared_dir': prepared,
            'evaluator': evaluator_dir, 'machine': machine(), 'rows': [],
            'data': dict(system='data', **data_figures), 'per_example': {'data': data_examples},
            'shown': {'sources': sources, 'references': [task_metrics.as_text(r) for r in references[:SHOWN]]}}
  key = jax.random.PRNGKey(seed)
  for w, run in zip(workdirs, loaded):
    system, decoder = system_name(run.config)
    rows = task_eval.held_out_rows(run.config.data, prepared, num_examples, batch_size)
    base = SamplerOptions.from_config(run.config.sample, overrides)
    kind = run.config.model.kind
    grid = ([('cached', None)] if kind == 'byte_ar' else
            settings[kind] if isinstance(settings, dict) else settings)
    for sampler, steps in grid:
      options = setting_options(base, sampler, steps or base.steps)
      generated, cost = task_eval.generate(run.model, run.params, rows, options,
                                           batch_size=batch_size, key=key)
      scored_rows, targets, _ = task_eval.target_rows(generated, rows['source_len'])
      figures, examples = task_eval.score(scored_rows, references, nats_of(scored_rows))
      name = '|'.join([system, decoder or '', sampler, str(steps or '')])
      result['rows'].append(dict(key=name, system=system, decoder_mode=decoder, run=w,
                                 sampler=sampler, steps=steps, **figures, **cost,
                                 generations=[task_metrics.as_text(t) for t in targets[:SHOWN]]))
      result['per_example'][name] = examples
      print(json.dumps({k: result['rows'][-1].get(k) for k in TABLE}), flush=True)
  return result


def machine() -> str:
  devices = jax.devices()
  return (f'{platform.machine()}, {os.cpu_count()} CPU cores, {len(devices)} x '
          f'{devices[0].platform}:{devices[0].device_kind}, jax {jax.__version__}')


def plot(result: dict, path: str):
  """ROUGE-L and gen-bpb (95% intervals) against wall time per example, per system."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  panels = [('rougeL', 'ROUGE-L vs reference')]
  if result['evaluator']:
    panels.append(('gen_bpb', 'gen-bpb of target | source'))
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
  curves = {}
  for r in result['rows']:
    curves.setdefault(r['system'] + (f" ({r['decoder_mode']})" if r['decoder_mode'] else ''),
                      []).append(r)
  for ax, (field, label) in zip(axes[0], panels):
    for name, rs in sorted(curves.items()):
      rs = sorted(rs, key=lambda r: r['wall_s_per_example'])
      x = [r['wall_s_per_example'] for r in rs]
      y = [r[field] for r in rs]
      err = [[r[field] - r[field + '_ci'][0] for r in rs], [r[field + '_ci'][1] - r[field] for r in rs]]
      ax.errorbar(x, y, yerr=err, fmt='o-', capsize=3, label=name)
      for r in rs:
        ax.annotate(f"{r['sampler'][:4]}{r['steps'] or ''}", (r['wall_s_per_example'], r[field]),
                    fontsize=6)
    if field == 'gen_bpb':
      ax.axhline(result['data']['gen_bpb'], color='k', ls='--', lw=1, label='reference targets')
    ax.set_xscale('log')
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel('wall time per example (s)')
    ax.set_ylabel(label)
    ax.legend(fontsize=7)
  fig.suptitle(f"{result['examples']} held-out pairs, 95% bootstrap intervals", fontsize=9)
  fig.tight_layout()
  with epath.Path(path).open('wb') as f:
    fig.savefig(f, dpi=120, format='png')
  plt.close(fig)


def run_eval_task_command(workdir: str) -> dict:
  """--mode=eval_task with the command's flags; writes PREFIX.json and PREFIX.png."""
  if NUM_EXAMPLES.value <= 0 or TASK_BATCH.value <= 0:
    raise ConfigError('--num_examples: --num_examples and --task_batch must be positive')
  result = evaluate_runs([workdir] + list(TASK_RUNS.value), evaluator_dir=EVALUATOR.value,
                         settings=parse_settings(SETTINGS.value), num_examples=NUM_EXAMPLES.value,
                         batch_size=TASK_BATCH.value, overrides=option_overrides(), seed=SEED.value)
  prefix = str(OUTPUT.value or epath.Path(workdir) / 'eval_task')  # local or gs://
  epath.Path(prefix).parent.mkdir(parents=True, exist_ok=True)
  epath.Path(prefix + '.json').write_text(json.dumps(result, indent=1))
  plot(result, prefix + '.png')
  print(f'wrote {prefix}.json and {prefix}.png')
  return result

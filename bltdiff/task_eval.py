"""Conditional generation, scored: the library of `--mode=eval_task`.

  held_out_rows(data_config, prepared_dir, n)    the first n validation pairs, laid out
  generate(model, params, rows, options, ...)    targets for their sources, timed
  target_rows(tokens, source_len)                generated rows -> targets, END, masks
  evaluator_nats(evaluator, params, rows)        −log p_eval(target symbols | source)
  score(...)                                     the figures of one (system, setting)

Rows are those of `bltdiff.data.pair_batches` ([n, L]: [source][SEP][target]
[END][PAD ...]); models are the conditional ones (`generate`,
`target_nll`: `bltdiff.models.conditional`, `bltdiff.latent.conditional`).

Figures of one (system, setting) over the n examples (see `score`):
  rouge1, rouge2, rougeL, rougeLsum   against the references (task_metrics);
                    rougeL also as per-example values and a 95% interval
  distinct_1/2/3, self_bleu, repeat_8gram, mean_bytes, mean_words  (task_metrics)
  gen_bpb           bits per generated target symbol (its bytes, and END when
                    it wrote one) given its source under the evaluator, a
                    byte AR trained on the same pairs: how well the target
                    follows from its prompt; with a 95% interval
  ended             fraction of generations that wrote END
  latent_calls      network calls per generated batch (every example of a
                    batch takes part in all of them)
  wall_s_per_example  generation wall time / n, after a compiling call (for
                    bltdiff it includes patching the source with its entropy model)
Intervals: `bltdiff.intervals` (percentile bootstrap over examples).
"""

import time

import jax
import numpy as np

from bltdiff import intervals, task_metrics, vocab
from bltdiff.data import pair_batches
from bltdiff.errors import DataError

ROW_KEYS = ('tokens', 'target_mask', 'source_len', 'valid', 'entropies')


def held_out_rows(data_config, prepared_dir: str, num_examples: int, batch_size: int = 16) -> dict:
  """The first num_examples pairs of the validation split, in stored order,
  laid out by data_config: {key: array [n, ...]} (pair_batches' row keys)."""
  it = pair_batches.make_pair_iterator(data_config, prepared_dir, 'validation',
                                       batch_size=batch_size, seed=0, num_epochs=1, shuffle=False)
  parts, count = [], 0
  for batch in it:
    keep = batch['valid']
    parts.append({k: v[keep] for k, v in batch.items()})
    count += int(keep.sum())
    if count >= num_examples:
      break
  if count < num_examples:
    raise DataError(f'{prepared_dir}: the validation split has {count} pairs, '
                    f'fewer than the {num_examples} asked for')
  return {k: np.concatenate([p[k] for p in parts])[:num_examples] for k in parts[0]}


def generate(model, params, rows: dict, options, *, batch_size: int, key) -> tuple[np.ndarray, dict]:
  """Targets for the sources of rows (their targets are blanked first):
  (generated rows int32 [n, L], {'latent_calls', 'wall_s', 'wall_s_per_example'}).

  Batches of batch_size examples (the last one filled up with copies of
  example 0, whose outputs are dropped). One untimed call compiles first;
  batch j uses fold_in(key, j). The sources' stored entropies are dropped:
  a model is given the source bytes only, so bltdiff's wall time includes
  its entropy model patching each source."""
  sources = pair_batches.source_rows(rows)
  sources.pop('entropies', None)
  n = len(sources['tokens'])
  batch_of = lambda start: {k: v[np.where(np.arange(start, start + batch_size) < n,
                                          np.arange(start, start + batch_size), 0)]
                            for k, v in sources.items()}
  model.generate(params, jax.random.fold_in(key, 1 << 20), options, batch_of(0))  # compiles
  outs, calls, wall = [], [], 0.0
  for j, start in enumerate(range(0, n, batch_size)):
    batch = batch_of(start)
    begin = time.perf_counter()
    out, stats = model.generate(params, jax.random.fold_in(key, j), options, batch)
    wall += time.perf_counter() - begin
    outs.append(np.asarray(out)[:min(batch_size, n - start)])
    calls.append(stats['latent_calls'])
  return np.concatenate(outs), {'latent_calls': float(np.mean(calls)), 'wall_s': wall,
                                'wall_s_per_example': wall / n}


def target_rows(tokens, source_len) -> tuple[dict, list[bytes], np.ndarray]:
  """Rows [n, L] (data or generated) -> (rows with target_mask on each
  target and its END, target bytes [n], ended bool [n])."""
  tokens = np.asarray(tokens, np.int32)
  mask = np.zeros(tokens.shape, bool)
  targets, ended = [], np.zeros(len(tokens), bool)
  for r, s in enumerate(np.asarray(source_len)):
    target, ended[r] = pair_batches.target_of(tokens[r], s)
    targets.append(bytes(target.astype(np.uint8).tolist()))
    mask[r, s + 1:s + 1 + len(target) + int(ended[r])] = True
  return {'tokens': tokens, 'target_mask': mask,
          'source_len': np.asarray(source_len, np.int32)}, targets, ended


def evaluator_nats(evaluator, params, rows: dict, seq_len: int, batch_size: int = 16) -> np.ndarray:
  """float [n]: −log p_eval(target symbols | source) in nats of each row
  (target_mask marks the symbols) under a conditional byte AR evaluator of
  context seq_len >= the rows' length."""
  tokens, mask = rows['tokens'], rows['target_mask']
  n, length = tokens.shape
  if length > seq_len:
    raise DataError(f'--evaluator: its context ({seq_len}) is shorter than the rows ({length})')
  full_tokens = np.full((n, seq_len), vocab.PAD, np.int32)
  full_mask = np.zeros((n, seq_len), bool)
  full_tokens[:, :length], full_mask[:, :length] = tokens, mask
  score = jax.jit(evaluator.target_nll)
  nats = []
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    batch = {'tokens': full_tokens[idx], 'target_mask': full_mask[idx]}
    nats.append(np.asarray(score(params, batch))[:min(batch_size, n - start)])
  return np.concatenate(nats).astype(np.float64)


def score(generated_rows: dict, references: list[bytes], nats=None) -> tuple[dict, dict]:
  """(figures, per-example arrays) of generated targets: generated_rows from
  `target_rows`, references the reference targets' bytes, nats the
  evaluator's nats per example (None: no gen-bpb)."""
  _, targets, ended = target_rows(generated_rows['tokens'], generated_rows['source_len'])
  figures = task_metrics.task_metrics(list(zip(targets, references)))
  rouge = task_metrics.rouge_per_pair(targets, references)
  symbols = np.asarray([len(t) for t in targets]) + ended
  per_example = {'rougeL': rouge['rougeL'].tolist(), 'symbols': symbols.tolist()}
  figures['rougeL_ci'] = _bounds(intervals.ratio_interval(rouge['rougeL']))
  figures['ended'] = float(ended.mean())
  if nats is not None:
    bits = np.asarray(nats) / np.log(2.0)
    figures['gen_bpb'] = intervals.ratio(bits, symbols)
    figures['gen_bpb_ci'] = _bounds(intervals.ratio_interval(bits, symbols))
    per_example['bits'] = bits.tolist()
  return figures, per_example


def _bounds(interval: dict) -> list[float]:
  return [interval['lo'], interval['hi']]

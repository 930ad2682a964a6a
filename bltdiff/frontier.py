"""Quality-versus-cost frontiers and speed-ups at matched quality.

A row is one system at one sampler setting, a dict with at least `gen_bpb`
(lower is better), `unigram_entropy`, `sample_bytes` and a cost (e.g.
`flops_per_byte`, `wall_s_per_sample`). The protocol (docs/design.md,
"Measuring"):

- The quality bar: a row counts only if its unigram entropy is not below the
  data's by more than 2% (no collapse) and its mean length is within 5% of
  the requested length. A collapse must never read as a win.
- A system's frontier on a cost axis: its rows under the bar, cheapest first,
  keeping each row that is better than every cheaper one.
- The cost of a system at quality q: the cost at which its frontier first
  reaches gen-bpb ≤ q, interpolated linearly in (log cost, gen-bpb) between
  the last frontier point above q and the first one at or below it.
- The baseline is given the benefit of the doubt: it reaches q at the
  cheapest setting that cannot be told apart from q (no interpolation).
  When q is the gen-bpb of one of its settings, itself a noisy estimate, that
  is a two-sample test at 95%: a row counts when its gen-bpb exceeds q by at
  most √(w_row² + w_q²), w_row the lower and w_q the upper half-width of the
  two rows' 95% intervals (`gen_bpb_ci`). Otherwise (w_q = 0) the row's
  interval must reach q. Why not the interval alone: it treats the best
  setting's estimate as exact, so the setting it picks, and a speed-up by
  2x with it, turned on one run's sampling noise (byte MDLM's 64-step row,
  the setting picked in one run, missed its 128-step row's 5.440 by 0.011 in
  the next). Without intervals, the frontier rule above applies.
- A speed-up at q: baseline cost at q / candidate cost at q. The headline uses
  q = the best gen-bpb the baseline reaches (its best setting, not its most
  expensive one).
"""

import math

ENTROPY_TOLERANCE = 0.02  # unigram entropy at most 2% below the data's
LENGTH_TOLERANCE = 0.05  # mean sample length within 5% of the requested length


def passes_bar(row: dict, data_entropy: float, requested_bytes: float) -> bool:
  """The quality bar of the module docstring."""
  return (row['unigram_entropy'] >= (1 - ENTROPY_TOLERANCE) * data_entropy
          and abs(row['sample_bytes'] - requested_bytes) <= LENGTH_TOLERANCE * requested_bytes)


def frontier(rows: list[dict], cost: str) -> list[dict]:
  """Rows on the frontier, cheapest first (see the module docstring)."""
  out = []
  for row in sorted(rows, key=lambda r: (r[cost], r['gen_bpb'])):
    if not out or row['gen_bpb'] < out[-1]['gen_bpb']:
      out.append(row)
  return out


def cost_at_quality(rows: list[dict], quality: float, cost: str):
  """(cost, row) where the frontier first reaches gen-bpb <= quality: row is
  the first frontier row at or below it (the cost is interpolated towards the
  cheaper row above it); (None, None) if the system never reaches it."""
  points = frontier(rows, cost)
  for i, row in enumerate(points):
    if row['gen_bpb'] <= quality:
      if i == 0 or row['gen_bpb'] == quality:
        return row[cost], row
      above = points[i - 1]
      share = (above['gen_bpb'] - quality) / (above['gen_bpb'] - row['gen_bpb'])
      log_cost = math.log(above[cost]) + share * (math.log(row[cost]) - math.log(above[cost]))
      return math.exp(log_cost), row
  return None, None


def reaches(row: dict, quality: float, w_q: float) -> bool:
  """The module docstring's two-sample rule: row (with gen_bpb_ci) is not
  worse than quality by more than √(row's lower half-width² + w_q²), w_q the
  upper half-width of quality's own estimate (0 for a fixed level)."""
  return row['gen_bpb'] - quality <= math.hypot(row['gen_bpb'] - row['gen_bpb_ci'][0], w_q)


def cost_within_interval(rows: list[dict], quality: float, cost: str):
  """(cost, row) of the cheapest row that cannot be told apart from quality
  (the module docstring's two-sample rule; the interval's upper half-width of
  the row whose gen-bpb is quality, 0 when no row's is), the baseline's cost
  at q; rows without an interval fall back to cost_at_quality. (None, None)
  if no row reaches it."""
  if not all(r.get('gen_bpb_ci') for r in rows):
    return cost_at_quality(rows, quality, cost)
  at_quality = [r['gen_bpb_ci'][1] - r['gen_bpb'] for r in rows if r['gen_bpb'] == quality]
  w_q = max(at_quality, default=0.0)
  reaching = [r for r in rows if reaches(r, quality, w_q)]
  if not reaching:
    return None, None
  row = min(reaching, key=lambda r: (r[cost], r['gen_bpb']))
  return row[cost], row


def describe(row: dict) -> str:
  """A row's setting in a few words, e.g. 'bltdiff ar cached 16 steps'."""
  parts = [row['system']]
  if row.get('decoder_mode'):
    parts.append(row['decoder_mode'])
  parts.append(row['sampler'])
  option = row.get('option')
  parts.append(option if option else f"{row['steps']} steps")
  return ' '.join(parts)


def speedup(baseline: list[dict], candidate: list[dict], quality: float) -> dict | None:
  """Baseline cost / candidate cost at a quality both reach, on both axes;
  None if either system misses it on an axis."""
  out = {'quality': quality}
  for cost, name in (('flops_per_byte', 'flops'), ('wall_s_per_sample', 'wall')):
    base_cost, base_row = cost_within_interval(baseline, quality, cost)
    cand_cost, cand_row = cost_at_quality(candidate, quality, cost)
    if base_cost is None or cand_cost is None:
      return None
    out[f'{name}_ratio'] = base_cost / cand_cost
    out[f'{name}_baseline_cost'], out[f'{name}_candidate_cost'] = base_cost, cand_cost
    out[f'{name}_baseline_row'], out[f'{name}_candidate_row'] = (describe(base_row),
                                                                 describe(cand_row))
  return out


def matched_quality_levels(baseline: list[dict], candidate: list[dict], count: int = 3):
  """Up to `count` gen-bpb levels both systems reach: the baseline's frontier
  values (on FLOPs) that the candidate's best row also reaches, best first."""
  best_candidate = min((r['gen_bpb'] for r in candidate), default=math.inf)
  levels = sorted({r['gen_bpb'] for r in frontier(baseline, 'flops_per_byte')
                   if r['gen_bpb'] >= best_candidate})
  return levels[:count]

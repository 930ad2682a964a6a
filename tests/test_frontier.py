"""Frontiers and matched-quality speed-ups on hand-made rows."""

import math

import pytest

from bltdiff import frontier


def row(system, steps, gen_bpb, flops, wall, entropy=4.5, length=256.0):
  return dict(system=system, sampler='cached', decoder_mode=None, steps=steps, gen_bpb=gen_bpb,
              flops_per_byte=flops, wall_s_per_sample=wall, unigram_entropy=entropy,
              sample_bytes=length)


BASE = [row('byte_mdlm', 8, 5.6, 1e6, 0.1), row('byte_mdlm', 16, 5.3, 2e6, 0.2),
        row('byte_mdlm', 64, 5.0, 8e6, 0.8), row('byte_mdlm', 256, 5.05, 32e6, 3.2)]


def test_quality_bar_rejects_collapse_and_short_samples():
  assert frontier.passes_bar(row('x', 1, 5, 1, 1, entropy=4.42), 4.5, 256)  # -1.8%
  assert not frontier.passes_bar(row('x', 1, 5, 1, 1, entropy=4.40), 4.5, 256)  # -2.2%
  assert not frontier.passes_bar(row('x', 1, 5, 1, 1, length=240), 4.5, 256)  # -6%
  assert frontier.passes_bar(row('x', 1, 5, 1, 1, length=250), 4.5, 256)


def test_frontier_drops_dominated_rows():
  # T=256 is dearer and no better than T=64: not on the frontier.
  assert [r['steps'] for r in frontier.frontier(BASE, 'flops_per_byte')] == [8, 16, 64]


def test_cost_at_quality_interpolates_in_log_cost():
  cost, r = frontier.cost_at_quality(BASE, 5.15, 'flops_per_byte')
  # Halfway from 5.3 (2e6) to 5.0 (8e6) in gen-bpb: the geometric mean of the costs.
  assert cost == pytest.approx(math.sqrt(2e6 * 8e6)) and r['steps'] == 64
  assert frontier.cost_at_quality(BASE, 5.0, 'flops_per_byte')[0] == 8e6
  assert frontier.cost_at_quality(BASE, 6.0, 'flops_per_byte')[0] == 1e6  # the cheapest reaches it
  assert frontier.cost_at_quality(BASE, 4.9, 'flops_per_byte') == (None, None)


def test_speedup_is_against_the_cheapest_setting_of_equal_quality():
  candidate = [row('bltdiff', 8, 5.2, 1e5, 0.05), row('bltdiff', 16, 4.95, 2e5, 0.1)]
  out = frontier.speedup(BASE, candidate, 5.0)
  # Byte MDLM's cost at 5.0 is its T=64 row (not the dearer T=256); bltdiff's is
  # interpolated between its two rows: 5.0 is 1/5 of the way from 4.95 up to 5.2.
  bltdiff_cost = math.exp(math.log(1e5) + (5.2 - 5.0) / (5.2 - 4.95) * math.log(2.0))
  assert out['flops_ratio'] == pytest.approx(8e6 / bltdiff_cost)
  assert out['flops_baseline_row'] == 'byte_mdlm cached 64 steps'
  assert frontier.speedup(BASE, candidate, 4.9) is None  # neither reaches it


def test_matched_levels_are_reached_by_both():
  candidate = [row('bltdiff', 8, 5.2, 1e5, 0.05)]
  assert frontier.matched_quality_levels(BASE, candidate) == [5.3, 5.6]


def test_baseline_settings_inside_the_interval_count_as_reaching_it():
  # T=16's interval reaches 5.0, T=64's best point: the cheaper T=16 is byte
  # MDLM's cost at 5.0 (the benefit of the doubt goes to the baseline).
  with_ci = [dict(r, gen_bpb_ci=[r['gen_bpb'] - w, r['gen_bpb'] + w])
             for r, w in zip(BASE, (0.1, 0.35, 0.05, 0.05))]
  cost, r = frontier.cost_within_interval(with_ci, 5.0, 'flops_per_byte')
  assert (cost, r['steps']) == (2e6, 16)
  assert frontier.cost_within_interval(with_ci, 4.9, 'flops_per_byte') == (None, None)
  candidate = [row('bltdiff', 8, 4.95, 1e5, 0.05)]
  assert frontier.speedup(with_ci, candidate, 5.0)['flops_ratio'] == pytest.approx(20.0)


def test_a_setting_that_cannot_be_told_apart_from_the_best_one_reaches_it():
  """q is the best row's gen-bpb, itself an estimate: a cheaper row whose
  interval misses the point q but whose gap to that row is within the two
  intervals' combined half-width (√(0.06² + 0.06²) = 0.085) reaches q; a gap
  beyond it does not."""
  ci = lambda r, w: dict(r, gen_bpb_ci=[r['gen_bpb'] - w, r['gen_bpb'] + w])
  best = ci(row('byte_mdlm', 128, 5.0, 16e6, 1.6), 0.06)
  near = ci(row('byte_mdlm', 64, 5.08, 8e6, 0.8), 0.06)  # 5.02 > 5.0: misses the point
  far = ci(row('byte_mdlm', 32, 5.10, 4e6, 0.4), 0.06)
  cost, r = frontier.cost_within_interval([best, near, far], 5.0, 'flops_per_byte')
  assert (cost, r['steps']) == (8e6, 64)
  cost, r = frontier.cost_within_interval([best, far], 5.0, 'flops_per_byte')
  assert (cost, r['steps']) == (16e6, 128)
  # At a level that is no row's gen-bpb, the interval must reach it.
  assert frontier.cost_within_interval([near, far], 5.0, 'flops_per_byte') == (None, None)

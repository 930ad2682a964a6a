"""The task evaluation (--mode=eval_task): figures of generated targets by hand,
bootstrap intervals, and a whole evaluation of trained pairs runs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bltdiff import commands, eval_task, intervals, task_eval, vocab
from bltdiff.data import pair_batches
from bltdiff.errors import ConfigError
from bltdiff.sampling.options import SamplerOptions
from bltdiff.training import restore
from conftest import tiny_config

FIGURES = ('rouge1', 'rouge2', 'rougeL', 'rougeL_ci', 'distinct_1', 'distinct_2', 'distinct_3',
           'self_bleu', 'repeat_8gram', 'gen_bpb', 'gen_bpb_ci', 'mean_bytes', 'ended',
           'latent_calls', 'wall_s_per_example')


def generated_rows(pairs, seq_len=24, ended=None):
  rows = [pair_batches.layout_pair({'source': np.frombuffer(s, np.uint8),
                                    'target': np.frombuffer(t, np.uint8)}, seq_len=seq_len)
          for s, t in pairs]
  rows = pair_batches.stack_rows(rows, batch_size=len(rows), seq_len=seq_len)
  for r, end in enumerate(ended or []):
    if not end:  # a generation that stopped without writing END
      rows['tokens'][r][rows['tokens'][r] == vocab.BOUNDARY] = vocab.PAD
      rows['tokens'][r][rows['source_len'][r]] = vocab.BOUNDARY
  return rows


def test_score_by_hand():
  rows = generated_rows([(b'src', b'the cat sat'), (b'ab', b'the cat')], ended=[True, False])
  scored, targets, ended = task_eval.target_rows(rows['tokens'], rows['source_len'])
  assert targets == [b'the cat sat', b'the cat'] and ended.tolist() == [True, False]
  assert scored['target_mask'].sum(-1).tolist() == [12, 7]  # 11 bytes + END; 7 bytes
  nats = np.array([12.0, 8.0]) * math.log(2.0)  # 12 and 8 bits
  figures, per_example = task_eval.score(scored, [b'the cat sat', b'a dog'], nats)
  assert figures['gen_bpb'] == pytest.approx(20 / 19)  # bits over the 12 + 7 target symbols
  assert figures['rougeL'] == pytest.approx(0.5)  # identical (1) and disjoint (0)
  assert figures['rougeL_ci'] == pytest.approx([0.0, 1.0])  # 2000 resamples of 2 examples
  assert figures['distinct_1'] == pytest.approx(3 / 5)  # the cat sat | the cat
  assert figures['distinct_2'] == pytest.approx(2 / 3)
  assert figures['ended'] == 0.5 and figures['mean_bytes'] == 9.0
  assert per_example['symbols'] == [12, 7] and per_example['bits'] == pytest.approx([12, 8])
  lo, hi = figures['gen_bpb_ci']
  assert 8 / 7 >= hi >= figures['gen_bpb'] >= lo >= 1.0  # between the examples' own ratios


def test_intervals():
  x = np.array([0.2, 0.4, 0.9, 0.1])
  assert intervals.ratio_interval(np.full(5, 0.3)) == pytest.approx({'value': 0.3, 'lo': 0.3, 'hi': 0.3})
  shifted = intervals.difference_interval(x + 0.25, None, x, None)  # paired: the shift, exactly
  assert shifted == pytest.approx({'value': 0.25, 'lo': 0.25, 'hi': 0.25})
  unpaired = intervals.difference_interval(x + 0.25, None, x[::-1], None)
  assert unpaired['lo'] < 0.25 < unpaired['hi']
  iv = intervals.ratio_interval([3.0, 1.0], [2.0, 2.0])
  assert iv['value'] == pytest.approx(1.0) and iv['lo'] == pytest.approx(0.5) and iv['hi'] == pytest.approx(1.5)


def test_settings_are_checked():
  assert eval_task.parse_settings(['cached:16', 'adaptive:4']) == [('cached', 16), ('adaptive', 4)]
  for bad in (['cached'], ['cached:0'], ['cached:x']):
    with pytest.raises(ConfigError, match='^--task_settings'):
      eval_task.parse_settings(bad)
  options = eval_task.setting_options(SamplerOptions(), 'adaptive', 12)
  assert options.sampler == 'adaptive' and options.max_steps == 12


@pytest.fixture(scope='module')
def pair_runs(tmp_path_factory, corpus_glob):
  """A byte AR and a byte MDLM trained a few steps on passage pairs (one prepared split)."""
  root = tmp_path_factory.mktemp('runs')
  runs = {}
  for kind in ('byte_ar', 'byte_mdlm'):
    c = tiny_config(corpus_glob, **{'model.kind': kind, 'data.seq_len': 48,
                                    'train.eval_every': 4, 'train.checkpoint_every': 4})
    with c.unlocked():
      c.data.format = 'pairs'
      c.data.passage_bytes = 24
      if runs:
        c.data.prepared_dir = str(root / 'byte_ar' / 'data')
    runs[kind] = str(root / kind)
    commands.train(c, runs[kind])
  return runs


def test_evaluation_of_trained_pair_runs(pair_runs, tmp_path):
  ar, mdlm = pair_runs['byte_ar'], pair_runs['byte_mdlm']
  result = eval_task.evaluate_runs([ar, mdlm], evaluator_dir=ar, num_examples=6, batch_size=4,
                                   settings=[('cached', 8)])
  assert [(r['system'], r['sampler']) for r in result['rows']] == [
      ('byte_ar', 'cached'), ('byte_mdlm', 'cached')]
  for r in result['rows']:
    assert set(FIGURES) <= set(r) and len(r['generations']) == eval_task.SHOWN
    assert r['gen_bpb_ci'][0] <= r['gen_bpb'] <= r['gen_bpb_ci'][1]
    assert r['wall_s_per_example'] > 0 and r['latent_calls'] >= 1
    assert len(result['per_example'][r['key']]['bits']) == 6
  assert result['rows'][1]['latent_calls'] <= 8
  # The references' gen-bpb: the evaluator's exact −log p(target | source) on the same rows.
  evaluator = restore.load_for_inference(ar)
  rows = task_eval.held_out_rows(evaluator.config.data, result['prepared_dir'], 6)
  nats = sum(float(evaluator.model.target_nll(evaluator.params, rows)[i]) for i in range(6))
  assert result['data']['gen_bpb'] == pytest.approx(
      nats / rows['target_mask'].sum() / math.log(2.0), rel=1e-5)
  assert 'rougeL' not in result['data']
  eval_task.plot(json.loads(json.dumps(result)), str(tmp_path / 'tasks.png'))
  assert (tmp_path / 'tasks.png').stat().st_size > 0
  data = evaluator.config.data.to_dict()
  with pytest.raises(ConfigError, match='^data.seq_len'):
    eval_task.check_same_rows([ar, mdlm], [data, dict(data, seq_len=64)])
  with pytest.raises(ConfigError, match='^data.format'):
    eval_task.check_same_rows([ar, mdlm], [data, dict(data, format='text')])

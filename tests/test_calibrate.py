"""Threshold calibration lands on the target mean patch length."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bltdiff import calibration, entropy, patching, vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sample(num_docs=6, doc_len=3000, seed=0):
  """Text-like bytes with entropies that spike every few bytes, like words."""
  rng = np.random.default_rng(seed)
  tokens, ents = [], []
  for _ in range(num_docs):
    t = rng.integers(97, 123, doc_len).astype(np.int32)
    h = rng.gamma(1.5, 0.5, doc_len).astype(np.float32)
    spikes = rng.random(doc_len) < 0.22
    h[spikes] += rng.uniform(1.0, 4.0, spikes.sum())
    tokens.append(t)
    ents.append(h)
  return calibration.pack_documents(tokens, ents, seq_len=1024)


def test_pack_documents():
  tok, ent, valid = calibration.pack_documents(
      [np.arange(3), np.arange(4)], [np.ones(3), np.ones(4)], seq_len=5)
  assert tok.shape == (2, 5)
  np.testing.assert_array_equal(tok.reshape(-1)[:8], [0, 1, 2, vocab.BOUNDARY, 0, 1, 2, 3])
  assert ent.reshape(-1)[3] == entropy.BOUNDARY_ENTROPY
  np.testing.assert_array_equal(valid.reshape(-1), [True] * 8 + [False] * 2)


@pytest.mark.parametrize('mode,target', [('entropy', 4.5), ('monotonic', 4.5),
                                         ('entropy+monotonic', 4.5), ('static', 5.0)])
def test_calibration_hits_target(mode, target):
  tok, ent, valid = _sample()
  config = patching.PatchConfig(mode=mode, monotonic_threshold=0.2, max_patch_len=12)
  result = calibration.calibrate(tok, ent, valid, config, target_mean=target)
  assert result['reachable']
  assert abs(result['mean_patch_bytes'] - target) <= 0.05 * target, result
  assert result['num_bytes'] == int(valid.sum())
  assert result['p50'] <= result['p90'] <= result['max'] <= 12
  # the reported threshold reproduces the reported stats
  fields = {k: result[k] for k in ('threshold', 'monotonic_threshold', 'static_size')}
  again = calibration.length_stats(calibration.patch_lengths(
      tok, ent, valid, patching.PatchConfig(mode=mode, max_patch_len=12, **fields)))
  assert again['mean_patch_bytes'] == pytest.approx(result['mean_patch_bytes'])


def test_unreachable_target_is_reported():
  tok, ent, valid = _sample(num_docs=2)
  config = patching.PatchConfig(mode='entropy', max_patch_len=4)
  result = calibration.calibrate(tok, ent, valid, config, target_mean=6.0)
  assert not result['reachable'] and result['mean_patch_bytes'] <= 4


def test_cli_space_mode_on_text(tmp_path):
  (tmp_path / 'a.txt').write_bytes(b'Hello there, general Kenobi.\r\n' * 40 + b'\x00\xff\xfe')
  out = tmp_path / 'cal.json'
  result = subprocess.run([sys.executable, '-m', 'bltdiff.calibrate', f'--data={tmp_path}/*.txt',
                           '--mode=space', '--seq_len=256', f'--out={out}'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  saved = json.loads(out.read_text())
  assert f"achieved mean={saved['mean_patch_bytes']:.3f}" in result.stdout
  assert 3 < saved['mean_patch_bytes'] < 8

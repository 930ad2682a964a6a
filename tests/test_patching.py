"""Patching: invariants, hand-built boundaries per mode, batching, byte gather."""

import dataclasses
import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bltdiff import patching, vocab
from bltdiff.patching import PatchConfig

_patch = jax.jit(patching.patch, static_argnums=2)


@functools.partial(jax.jit, static_argnums=2)
def _patch_and_round_trip(tokens, entropies, config):
  """Patches, bytes gathered into patches and scattered back, in one compile."""
  p = patching.patch(tokens, entropies, config)
  patched = patching.patch_bytes(tokens, p, config.max_patch_len)
  return p, patched, patching.unpatch_bytes(patched, p.lengths, tokens.shape[-1])


def _row(text: bytes):
  return np.frombuffer(text, np.uint8).astype(np.int32)[None]


def _start_positions(p):
  return [int(i) for i in np.flatnonzero(np.asarray(p.starts[0]))]


def _check_invariants(tokens, p, config):
  """Lengths tile the row, every patch within 1..max_patch_len, ids monotone."""
  tokens = np.asarray(tokens)
  lengths, offsets, mask = map(np.asarray, (p.lengths, p.offsets, p.slot_mask))
  ids, pos, starts = map(np.asarray, (p.patch_ids, p.positions, p.starts))
  n = tokens.shape[1]
  np.testing.assert_array_equal(lengths.sum(-1) + np.asarray(p.num_overflow_bytes), n)
  assert (lengths[mask] >= 1).all() and (lengths[mask] <= config.max_patch_len).all()
  assert (lengths[~mask] == 0).all()
  # real slots come first, then empty ones
  assert (np.diff(mask.astype(int), axis=-1) <= 0).all()
  assert (np.diff(ids, axis=-1) >= 0).all() and (np.diff(ids, axis=-1) <= 1).all()
  assert (ids[:, 0] == 0).all() and starts[:, 0].all()
  assert starts[tokens == vocab.BOUNDARY].all()
  np.testing.assert_array_equal(offsets[:, :-1] + lengths[:, :-1], offsets[:, 1:])
  assert (pos < config.max_patch_len).all()
  np.testing.assert_array_equal(p.num_patches, starts.sum(-1))


def test_entropy_mode_hand_built():
  tokens = _row(b'abcdefghij')
  h = np.array([[3.0, 0.1, 0.2, 2.5, 0.1, 0.1, 0.1, 0.1, 0.1, 1.9]], np.float32)
  config = PatchConfig(mode='entropy', threshold=2.0, max_patch_len=4, num_slots=10)
  p = _patch(tokens, h, config)
  # 0 (forced and > 2), 3 (> 2), 7 (split: patch from 3 reaches 4 bytes); 9 is < 2
  assert _start_positions(p) == [0, 3, 7]
  np.testing.assert_array_equal(p.lengths[0], [3, 4, 3] + [0] * 7)
  np.testing.assert_array_equal(p.offsets[0], [0, 3, 7] + [10] * 7)
  np.testing.assert_array_equal(p.patch_ids[0], [0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(p.positions[0], [0, 1, 2, 0, 1, 2, 3, 0, 1, 2])
  _check_invariants(tokens, p, config)


def test_monotonic_and_combined_hand_built():
  # bytes:       a    b    c    \n   d    e    f    g
  tokens = _row(b'abc\ndefg')
  h = np.array([[0.5, 2.0, 2.2, 3.0, 3.1, 1.0, 2.5, 2.6]], np.float32)
  base = PatchConfig(mode='monotonic', monotonic_threshold=0.5, max_patch_len=8,
                     num_slots=8)
  # rises > 0.5: b (+1.5), \n (+0.8), g? no (+0.1); f (+1.5)
  assert _start_positions(_patch(tokens, h, base)) == [0, 1, 3, 6]
  # after the newline the reference is 0, so d (3.1 - 0) starts too
  reset = dataclasses.replace(base, reset_on_newline=True)
  assert _start_positions(_patch(tokens, h, reset)) == [0, 1, 3, 4, 6]
  # combined: rise > 0.5 AND H > 2.4 -> \n (3.0) and f (2.5); not b (2.0)
  both = dataclasses.replace(base, mode='entropy+monotonic', threshold=2.4)
  assert _start_positions(_patch(tokens, h, both)) == [0, 3, 6]


def test_boundary_always_starts_and_resets_reference():
  tokens = _row(b'abcdef')
  tokens[0, 3] = vocab.BOUNDARY
  h = np.array([[0.0, 0.0, 0.0, 1e4, 0.9, 0.0]], np.float32)
  for mode in patching.MODES:
    config = PatchConfig(mode=mode, threshold=5.0, monotonic_threshold=0.5,
                         static_size=5, max_patch_len=8, num_slots=6)
    p = _patch(tokens, h, config)
    assert {0, 3} <= set(_start_positions(p)), mode
    _check_invariants(tokens, p, config)
  # the byte after BOUNDARY rises by 0.9 from a reset reference of 0
  p = _patch(tokens, h, PatchConfig(mode='monotonic', monotonic_threshold=0.5, num_slots=6))
  assert _start_positions(p) == [0, 3, 4]


def test_static_byte_space_hand_built():
  tokens = _row(b'ab cd')
  tokens = np.concatenate([tokens, [[vocab.BOUNDARY]], _row(b'efgh')], axis=1)
  static = PatchConfig(mode='static', static_size=2, max_patch_len=8, num_slots=10)
  # restarts counting at the BOUNDARY (position 5)
  assert _start_positions(_patch(tokens, None, static)) == [0, 2, 4, 5, 7, 9]
  p = _patch(tokens, None, PatchConfig(mode='byte', max_patch_len=8, num_slots=10))
  assert _start_positions(p) == list(range(10))
  text = 'hello, wörld  x1\n'.encode()
  p = _patch(_row(text), None, PatchConfig(mode='space', max_patch_len=16, num_slots=20))
  pieces = [text[s:e] for s, e in zip(_start_positions(p), _start_positions(p)[1:] + [len(text)])]
  # a patch ends after the first non-word byte of a run; ö (2 bytes) is never split
  assert pieces == [b'hello,', ' wörld '.encode(), b' x1\n']


def test_overflow_drops_trailing_patches():
  tokens = _row(b'abcdefghij')
  config = PatchConfig(mode='byte', max_patch_len=4, num_slots=6)
  p, _, back = _patch_and_round_trip(tokens, None, config)
  assert int(p.num_patches[0]) == 10 and int(p.num_overflow_bytes[0]) == 4
  np.testing.assert_array_equal(p.patch_ids[0], [0, 1, 2, 3, 4, 5, 6, 6, 6, 6])
  assert bool(p.slot_mask[0].all())
  _check_invariants(tokens, p, config)
  np.testing.assert_array_equal(back[0], list(b'abcdef') + [vocab.PAD] * 4)


@pytest.mark.parametrize('mode', patching.MODES)
def test_random_bytes_batched_equals_one_by_one_and_round_trip(mode):
  rng = np.random.default_rng(0)
  b, n = 4, 96
  tokens = rng.integers(0, 256, (b, n)).astype(np.int32)  # invalid UTF-8 and NULs
  tokens[:, 5] = 0
  tokens[1, 40] = vocab.BOUNDARY
  h = rng.gamma(2.0, 0.7, (b, n)).astype(np.float32)
  h[tokens == vocab.BOUNDARY] = 1e4
  config = PatchConfig(mode=mode, threshold=1.5, monotonic_threshold=0.3,
                       reset_on_newline=True, static_size=3, max_patch_len=6, num_slots=n)
  p, patched, back = _patch_and_round_trip(tokens, h, config)
  _check_invariants(tokens, p, config)
  for i in range(b):
    q = _patch(tokens[i:i + 1], h[i:i + 1], config)
    for name in ('starts', 'patch_ids', 'lengths', 'offsets', 'slot_mask', 'num_patches'):
      np.testing.assert_array_equal(getattr(p, name)[i:i + 1], getattr(q, name), err_msg=name)
  assert patched.shape == (b, n, config.max_patch_len)
  np.testing.assert_array_equal(back, tokens)
  # the gather puts byte t at [patch_ids[t], positions[t]]
  rows = np.arange(b)[:, None]
  np.testing.assert_array_equal(np.asarray(patched)[rows, p.patch_ids, p.positions], tokens)


def test_config_from_dict_and_validation():
  c = PatchConfig.from_config({'mode': 'space', 'max_patch_len': 5, 'unrelated': 1})
  assert c == PatchConfig(mode='space', max_patch_len=5)
  with pytest.raises(ValueError):
    PatchConfig(mode='bpe')
  with pytest.raises(ValueError):
    patching.patch(_row(b'ab'), None, PatchConfig(mode='entropy'))


def test_traced_threshold_matches_config_threshold():
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 256, (2, 64)).astype(np.int32)
  h = rng.gamma(2.0, 0.7, (2, 64)).astype(np.float32)
  config = PatchConfig(mode='entropy', threshold=0.0, num_slots=64)
  f = jax.jit(lambda t, e, th: patching.patch(t, e, config, threshold=th).starts)
  np.testing.assert_array_equal(
      f(tokens, h, 1.2), _patch(tokens, h, dataclasses.replace(config, threshold=1.2)).starts)


def test_show_patches_command_without_model(tmp_path):
  text = 'Hello, wörld!\r\n\x00\xff tail'.encode()
  (tmp_path / 'text').write_bytes(text)
  out = tmp_path / 'p.png'
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-m', 'bltdiff.show_patches',
                           f'--text_file={tmp_path / "text"}', '--mode=space', f'--out={out}'],
                          cwd=repo, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert out.stat().st_size > 0
  printed = result.stdout.splitlines()[0]
  assert printed.split('|')[0] == 'Hello,' and '\\r\\n\\x00' in printed

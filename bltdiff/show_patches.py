"""Show how a text is patched: a PNG of per-byte entropy with patch boundaries,
and the text split into patches in the terminal.

  python -m bltdiff.show_patches --entropy_model=WORKDIR \
      --text="The quick brown fox" --threshold=1.5 --out=patches.png

Patches are printed separated by '|'; each patch's bytes are decoded on their
own, so a patch boundary inside a multi-byte character (possible in the
entropy modes) shows as U+FFFD, as does invalid UTF-8. Control characters are
shown escaped (\\n, \\r, \\x00).
"""

from __future__ import annotations


import numpy as np
from absl import app, flags

from bltdiff import command_line, patching
from bltdiff.errors import BltdiffError
from bltdiff.training import restore


def split_patches(data: bytes, starts: np.ndarray) -> list[bytes]:
  """The bytes of each patch, from bool starts [len(data)]."""
  cuts = list(np.flatnonzero(starts)) + [len(data)]
  return [data[s:e] for s, e in zip(cuts[:-1], cuts[1:])]


def printable(piece: bytes) -> str:
  """A patch as readable text: invalid UTF-8 as U+FFFD, controls escaped."""
  text = piece.decode('utf-8', errors='replace')
  return ''.join(c if c.isprintable() or c == ' ' else repr(c)[1:-1] for c in text)


def byte_label(b: int) -> str:
  """Tick label of one byte."""
  if 32 < b < 127:
    return chr(b)
  return {10: '\\n', 13: '\\r', 9: '\\t', 32: '␣'}.get(b, f'{b:02x}')


def plot_patches(data: bytes, entropies: np.ndarray | None, starts: np.ndarray,
                 config: patching.PatchConfig, out: str, title: str = ''):
  """Writes a PNG: entropy per byte, a line at each patch start, the threshold."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  n = len(data)
  width = min(max(8.0, 0.14 * n), 60.0)
  fig, ax = plt.subplots(figsize=(width, 3.6))
  x = np.arange(n)
  if entropies is not None:
    ax.plot(x, entropies, '-o', ms=2.5, lw=1, color='tab:blue', label='entropy (nats)')
    if config.mode in ('entropy', 'entropy+monotonic'):
      ax.axhline(config.threshold, color='tab:red', ls='--', lw=1,
                 label=f'threshold θ={config.threshold:g}')
    ax.set_ylim(0, max(float(np.max(entropies)) * 1.1, config.threshold * 1.2, 1.0))
    ax.set_ylabel('next-byte entropy (nats)')
  for s in np.flatnonzero(starts):
    ax.axvline(s - 0.5, color='tab:gray', lw=0.8, alpha=0.8)
  if n <= 400:
    ax.set_xticks(x)
    ax.set_xticklabels([byte_label(b) for b in data], fontsize=7, family='monospace')
  ax.set_xlim(-1, n)
  ax.set_xlabel(f'{n} bytes, {int(starts.sum())} patches '
                f'(mean {n / max(int(starts.sum()), 1):.2f} bytes); gray lines: patch starts')
  ax.set_title(title or f'mode={config.mode}')
  if entropies is not None:
    ax.legend(loc='upper right', fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)


def define_flags():
  """The command's flags (defined only when it runs as the command, so that
  importing this module next to another command defines nothing)."""
  flags.DEFINE_string('text', None, 'The text to patch.')
  flags.DEFINE_string('text_file', None, 'A file whose bytes to patch.')
  flags.DEFINE_string('entropy_model', None, 'Workdir of a trained byte_ar run (needed by '
                      'the entropy modes).')
  flags.DEFINE_enum('mode', 'entropy', list(patching.MODES), 'Patching mode.')
  flags.DEFINE_float('threshold', 1.5, 'Entropy threshold θ (nats).')
  flags.DEFINE_float('monotonic_threshold', 0.0, 'Monotonic threshold.')
  flags.DEFINE_bool('reset_on_newline', False, 'Monotonic reference resets after a newline.')
  flags.DEFINE_integer('static_size', 4, 'Patch size of the static mode.')
  flags.DEFINE_integer('max_patch_len', 8, 'Longest patch (bytes).')
  flags.DEFINE_integer('max_bytes', 2000, 'Truncate longer texts.')
  flags.DEFINE_string('out', 'patches.png', 'PNG path.')


def run(args) -> list[bytes]:
  """Patches, prints and plots with the given flag values; returns the patches."""
  if (args.text is None) == (args.text_file is None):
    raise BltdiffError('--text / --text_file: give exactly one')
  if args.text is not None:
    data = args.text.encode('utf-8')
  else:
    with open(args.text_file, 'rb') as f:
      data = f.read()
  data = data[:args.max_bytes]
  if not data:
    raise BltdiffError('--text: empty text')
  config = patching.PatchConfig(
      mode=args.mode, threshold=args.threshold,
      monotonic_threshold=args.monotonic_threshold, reset_on_newline=args.reset_on_newline,
      static_size=args.static_size, max_patch_len=args.max_patch_len, num_slots=len(data))

  entropies = None
  if args.entropy_model:
    model = restore.load_entropy_model(args.entropy_model, batch_size=1)
    entropies = model([data])[0]
  elif args.mode in patching.ENTROPY_MODES:
    raise BltdiffError(f'--entropy_model: needed for mode {args.mode}')

  tokens = np.frombuffer(data, np.uint8).astype(np.int32)[None]
  ent = None if entropies is None else entropies[None]
  starts = np.asarray(patching.patch(tokens, ent, config).starts[0])
  pieces = split_patches(data, starts)
  print('|'.join(printable(p) for p in pieces))
  print(f'{len(data)} bytes -> {len(pieces)} patches, mean {len(data) / len(pieces):.2f} '
        f'bytes (mode={config.mode})')
  plot_patches(data, entropies, starts, config, args.out)
  print(f'wrote {args.out}')
  return pieces


def main(argv):
  command_line.run_command(run, argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)

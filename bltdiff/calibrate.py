r"""The calibration command: the patching threshold for a target mean patch size.

  python -m bltdiff.calibrate --entropy_model=WORKDIR --data='corpus/*.txt' \
      --target_mean=4.5 --mode=entropy

--data is a glob of text files (or a directory of them), or a prepared shard
directory (its stored entropies are used). Writes the calibrated fields and the
achieved patch-size statistics as JSON (see `bltdiff.calibration`).
"""

import glob
import json
import os

import numpy as np
from absl import app, flags
from etils import epath

from bltdiff import calibration, command_line, patching
from bltdiff.errors import BltdiffError
from bltdiff.training import restore
from data_prep import manifest as mf


def define_flags():
  """The command's flags (defined only when it runs as the command, so that
  importing this module next to another command defines nothing)."""
  flags.DEFINE_string('entropy_model', None, 'Workdir of a trained byte_ar run.')
  flags.DEFINE_string('data', None, 'Text glob, or a prepared shard directory.')
  flags.DEFINE_float('target_mean', 4.5, 'Target mean bytes per patch.')
  flags.DEFINE_enum('mode', 'entropy', list(patching.MODES), 'Patching mode.')
  flags.DEFINE_integer('max_patch_len', 8, 'Longest patch (bytes).')
  flags.DEFINE_float('threshold', 1.5, 'Fixed θ of entropy+monotonic when '
                     'monotonic_threshold is searched; unused for monotonic.')
  flags.DEFINE_float('monotonic_threshold', 0.0, 'Monotonic threshold.')
  flags.DEFINE_bool('reset_on_newline', False, 'Monotonic reference resets after a newline.')
  flags.DEFINE_integer('seq_len', 4096, 'Packed row length.')
  flags.DEFINE_integer('max_bytes', 1 << 18, 'Sample size in bytes.')
  flags.DEFINE_string('out', None, 'JSON path (default: ENTROPY_MODEL/calibration_MODE.json, '
                      'or ./calibration_MODE.json).')


def read_text_sample(pattern: str, max_bytes: int) -> list[bytes]:
  """Up to max_bytes from the files matching a glob, split evenly over files.

  Each file contributes one contiguous slice from its middle (skipping
  licence headers and footers), used as one document. The files are a local
  input corpus (a recursive `**` glob, which etils.epath does not offer); a
  run's prepared directory may be anywhere (gs:// too).
  """
  paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
  if not paths:
    raise BltdiffError(f'--data: no files match {pattern!r}')
  per_file = max(1, max_bytes // len(paths))
  docs = []
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    start = max(0, (len(data) - per_file) // 2)
    if data:
      docs.append(data[start:start + per_file])
  return docs


def read_sample(data: str, max_bytes: int, entropy_model_dir: str | None, *,
                needs_entropies: bool, batch_size: int = 16):
  """(token arrays, entropy arrays or None) of a sample of `data`.

  `data` is a glob of text files (or a directory of them), or a prepared
  directory (with manifest.json). Stored entropies of a prepared directory are
  used as they are; otherwise the entropy model scores the sample.
  """
  if (epath.Path(data) / mf.MANIFEST).exists():
    stored = needs_entropies and mf.read_manifest(data)['has_entropies']
    tokens, ents = calibration.read_prepared_sample(data, max_bytes, with_entropies=stored)
    if stored or not needs_entropies:
      return tokens, ents
    docs = [t.astype(np.uint8).tobytes() for t in tokens]
  else:
    pattern = os.path.join(data, '*.txt') if os.path.isdir(data) else data
    docs = read_text_sample(pattern, max_bytes)
    tokens = [np.frombuffer(d, np.uint8).astype(np.int32) for d in docs]
    if not needs_entropies:
      return tokens, None
  if not entropy_model_dir:
    raise BltdiffError(f'--entropy_model: needed, since {data} carries no entropies')
  model = restore.load_entropy_model(entropy_model_dir, batch_size=batch_size)
  return tokens, model(docs)


def _reach_note(mode: str, reachable: bool) -> str:
  if mode in ('space', 'byte'):
    return ' (this mode has no parameter: stats only)'
  return '' if reachable else ' (target NOT reached within 5%)'


def run(args) -> dict:
  """Calibrates with the given flag values (an object with the flags' names)."""

  config = patching.PatchConfig(
      mode=args.mode, threshold=args.threshold,
      monotonic_threshold=args.monotonic_threshold,
      reset_on_newline=args.reset_on_newline, max_patch_len=args.max_patch_len,
      num_slots=args.seq_len)
  tokens, ents = read_sample(args.data, args.max_bytes, args.entropy_model,
                             needs_entropies=args.mode in patching.ENTROPY_MODES)
  if ents is None:
    ents = [np.zeros(len(t), np.float32) for t in tokens]
  tok, ent, valid = calibration.pack_documents(tokens, ents, args.seq_len)
  result = calibration.calibrate(tok, ent, valid, config, args.target_mean)
  result.update(data=args.data, entropy_model=args.entropy_model)

  name = f"calibration_{args.mode.replace('+', '_')}.json"
  out = args.out or str(epath.Path(args.entropy_model or '.') / name)
  epath.Path(out).write_text(json.dumps(result, indent=2))
  param = {'monotonic': 'monotonic_threshold', 'static': 'static_size'}.get(
      args.mode, 'threshold' if args.mode in patching.ENTROPY_MODES else None)
  if param:
    print(f'{param} = {result[param]:.6g}')
  print(f"mode={args.mode} target={args.target_mean} achieved mean="
        f"{result['mean_patch_bytes']:.3f} p50={result['p50']:g} p90={result['p90']:g} "
        f"max={result['max']} over {result['num_bytes']} bytes, "
        f"{result['num_patches']} patches{_reach_note(args.mode, result['reachable'])}")
  print(f'wrote {out}')
  return result


def main(argv):
  command_line.run_command(run, argv, required=('data',))


if __name__ == '__main__':
  define_flags()
  app.run(main)

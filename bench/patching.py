"""Patch statistics of every patching mode on the development corpus, and the
entropy model's throughput on this machine.

  python bench/patching.py [--entropy_model=WORKDIR]

Writes bench/results/patching.json:
  {"rows": [{"mode", "threshold", "mean_patch_bytes", "p50", "p90", "max", ...}],
   "entropy_bytes_per_s": ..., ...}
and bench/results/patching.png (patch length histograms; an entropy trace with
the boundaries of the calibrated entropy mode).

The entropy modes are calibrated (bltdiff.calibrate) to --target_mean bytes
per patch on the sample, so their rows compare *where* the boundaries go at
equal mean size; `threshold` is the calibrated θ (θ_r for monotonic), the
patch size for static, null for space and byte.

Without --entropy_model it trains a small one first (configs/entropy_gutenberg.py
shrunk to --train_steps steps of 16 x 128 bytes: a few minutes on 2 CPU
cores) in runs/bench_entropy_gutenberg, reused on the next run. That model is
undertrained; pass a properly trained one for representative boundaries.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import report  # bench/report.py: BENCHMARKS.md from the JSON files

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from bltdiff import calibrate, calibration, patching  # noqa: E402
from bltdiff.training import restore  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'gutenberg'
RESULTS = REPO / 'bench' / 'results'


def train_entropy_model(workdir: Path, steps: int) -> None:
  """Trains the bench's small entropy model with the trainer, unless already there."""
  if (workdir / 'checkpoints').is_dir() and any(
      p.name.isdigit() for p in (workdir / 'checkpoints').iterdir()):
    print(f'reusing the entropy model in {workdir}')
    return
  cmd = [sys.executable, '-m', 'bltdiff.main', '--config=configs/entropy_gutenberg.py',
         f'--workdir={workdir}', f'--config.data.paths={CORPUS}',
         '--config.data.seq_len=128', '--config.train.batch_size=16',
         f'--config.train.num_steps={steps}', f'--config.train.warmup_steps={steps // 10}',
         f'--config.train.eval_every={steps}', '--config.train.eval_batches=2',
         f'--config.train.sample_every={steps}', f'--config.train.checkpoint_every={steps}',
         '--config.sample.num_samples=1', f'--config.train.log_every={max(steps // 5, 1)}']
  print('training the entropy model:', ' '.join(cmd[1:]), flush=True)
  t0 = time.time()
  subprocess.run(cmd, cwd=REPO, check=True, stderr=subprocess.DEVNULL)
  print(f'trained in {time.time() - t0:.0f} s', flush=True)


def plot(path: Path, rows: list[dict], histograms: dict, trace: dict) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7.5))
  for row in rows:
    hist = histograms[row['label']]
    x = np.arange(len(hist))
    ax1.plot(x[1:], hist[1:] / max(hist.sum(), 1), '-o', ms=3,
             label=f"{row['label']} (mean {row['mean_patch_bytes']:.2f})")
  ax1.set_xlabel('patch length (bytes)')
  ax1.set_ylabel('fraction of patches')
  ax1.set_title('patch length distribution per mode, development corpus')
  ax1.legend(fontsize=8, ncol=2)

  h, starts, data, theta = trace['entropies'], trace['starts'], trace['bytes'], trace['threshold']
  x = np.arange(len(h))
  ax2.plot(x, h, '-', lw=1, color='tab:blue', label='next-byte entropy (nats)')
  ax2.axhline(theta, color='tab:red', ls='--', lw=1, label=f'θ = {theta:.3f}')
  for s in np.flatnonzero(starts):
    ax2.axvline(s - 0.5, color='tab:gray', lw=0.6, alpha=0.7)
  ax2.set_xticks(x)
  ax2.set_xticklabels([chr(b) if 32 < b < 127 else '·' for b in data], fontsize=6,
                      family='monospace')
  ax2.set_xlim(-1, len(h))
  ax2.set_title('entropy mode (calibrated): gray lines are patch starts')
  ax2.legend(fontsize=8, loc='upper right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def define_flags():
  """The script's flags (defined when it runs as a script, so that another
  benchmark can import it)."""
  flags.DEFINE_string('entropy_model', None, 'Workdir of a trained byte_ar run (default: train one).')
  flags.DEFINE_integer('train_steps', 300, 'Steps of the entropy model trained here.')
  flags.DEFINE_integer('sample_bytes', 96_000, 'Bytes of the corpus sample.')
  flags.DEFINE_float('target_mean', 4.5, 'Target mean bytes per patch.')
  flags.DEFINE_integer('max_patch_len', 8, 'Longest patch.')
  flags.DEFINE_integer('seq_len', 1024, 'Packed row length.')


def main(argv) -> None:
  del argv
  args = flags.FLAGS

  t_start = time.time()
  workdir = args.entropy_model
  if not workdir:
    workdir = REPO / 'runs' / 'bench_entropy_gutenberg'
    train_entropy_model(workdir, args.train_steps)
  model = restore.load_entropy_model(str(workdir), batch_size=16)

  docs = calibrate.read_text_sample(str(CORPUS / '*.txt'), args.sample_bytes)
  model([docs[0][:model.chunk_len]])  # compile outside the timing
  t0 = time.perf_counter()
  ents = model(docs)
  seconds = time.perf_counter() - t0
  num_bytes = sum(len(d) for d in docs)
  print(f'entropies: {num_bytes} bytes in {seconds:.1f} s = {num_bytes / seconds:.0f} bytes/s '
        f'(chunks of {model.chunk_len}, overlap {model.overlap})', flush=True)

  tokens = [np.frombuffer(d, np.uint8).astype(np.int32) for d in docs]
  tok, ent, valid = calibration.pack_documents(tokens, ents, args.seq_len)
  base = dict(max_patch_len=args.max_patch_len, num_slots=args.seq_len)
  variants = [
      ('entropy', dict(mode='entropy')),
      ('monotonic', dict(mode='monotonic')),
      ('monotonic+newline', dict(mode='monotonic', reset_on_newline=True)),
      ('entropy+monotonic', dict(mode='entropy+monotonic', monotonic_threshold=0.0)),
      ('static', dict(mode='static')),
      ('space', dict(mode='space')),
      ('byte', dict(mode='byte')),
  ]
  rows, histograms, trace = [], {}, None
  for label, fields in variants:
    config = patching.PatchConfig(**base, **fields)
    result = calibration.calibrate(tok, ent, valid, config, args.target_mean)
    mode = config.mode
    threshold = {'monotonic': result['monotonic_threshold'],
                 'static': result['static_size']}.get(
                     mode, result['threshold'] if mode in patching.ENTROPY_MODES else None)
    calibrated = patching.PatchConfig(
        **base, **{**fields, 'threshold': result['threshold'],
                   'monotonic_threshold': result['monotonic_threshold'],
                   'static_size': result['static_size']})
    lengths = calibration.patch_lengths(tok, ent, valid, calibrated)
    histograms[label] = np.bincount(lengths, minlength=args.max_patch_len + 1)
    row = dict(mode=mode, label=label, threshold=threshold,
               mean_patch_bytes=round(result['mean_patch_bytes'], 4), p50=result['p50'],
               p90=result['p90'], max=result['max'],
               reset_on_newline=calibrated.reset_on_newline,
               monotonic_threshold=(calibrated.monotonic_threshold
                                    if mode == 'entropy+monotonic' else None),
               max_patch_len=args.max_patch_len, num_patches=result['num_patches'])
    rows.append(row)
    print(json.dumps(row), flush=True)
    if label == 'entropy':
      n = 160
      starts = patching.patch(tok[:1, :n], ent[:1, :n], calibrated).starts[0]
      trace = dict(entropies=ent[0, :n], starts=np.asarray(starts), bytes=tok[0, :n],
                   threshold=result['threshold'])

  RESULTS.mkdir(parents=True, exist_ok=True)
  out = dict(
      rows=rows,
      entropy_bytes_per_s=round(num_bytes / seconds, 1),
      entropy_rows_bytes_per_s=round(model.throughput(), 1),
      entropy_model=str(workdir),
      entropy_chunk_len=model.chunk_len,
      entropy_overlap=model.overlap,
      sample_bytes=num_bytes,
      corpus='shared/data/gutenberg (middle slice of each book)',
      target_mean=args.target_mean,
      seq_len=args.seq_len,
      total_seconds=round(time.time() - t_start, 1),
      notes=('entropy_bytes_per_s: documents scored end to end, overlap included; '
             'entropy_rows_bytes_per_s: raw model rows of chunk_len bytes. Without '
             '--entropy_model the model is a briefly trained small one.'),
  )
  out['machine'] = report.machine_description()
  (RESULTS / 'patching.json').write_text(json.dumps(out, indent=2))
  report.write()  # BENCHMARKS.md is regenerated from the JSON
  plot(RESULTS / 'patching.png', rows, histograms, trace)
  print(f"wrote {RESULTS / 'patching.json'} and patching.png "
        f'in {time.time() - t_start:.0f} s')


if __name__ == '__main__':
  define_flags()
  app.run(main)

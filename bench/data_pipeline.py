"""Throughput of packed batches from prepared ArrayRecord shards.

  python bench/data_pipeline.py            # -> bench/results/data_pipeline.{json,png}

Prepares the built-in corpus (the Python standard library, 16 MB) and, when
present, ../shared/data/gutenberg into a temporary directory, then times
`make_iterator` batches for several worker counts and batch shapes. MB/s counts
the bytes of the packed batches (batch_size · seq_len symbols per batch).
The headline `mb_per_s` is in-process (workers=0: one core), batch 64 × 512.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import report  # bench/report.py: BENCHMARKS.md from the JSON files

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app  # noqa: E402

from bltdiff.data import pipeline  # noqa: E402
from configs import common  # noqa: E402
from data_prep import writer as prep  # noqa: E402

RESULTS = REPO / 'bench' / 'results'
GUTENBERG = REPO.parent / 'shared' / 'data' / 'gutenberg'


def throughput(prepared: str, *, workers: int, batch_size: int, seq_len: int, seconds: float = 1.5) -> float:
  """MB/s of packed batches after a warm-up (worker start-up excluded)."""
  cfg = common.data_config(seq_len=seq_len, num_workers=workers)
  it = pipeline.make_iterator(cfg, prepared, 'train', batch_size=batch_size, seed=0)
  for _ in range(20):
    next(it)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    batch = next(it)
    n += 1
  dt = time.perf_counter() - start
  it.close()
  assert batch['tokens'].shape == (batch_size, seq_len)
  return n * batch_size * seq_len / dt / 1e6


def main(argv):
  del argv
  RESULTS.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix='bench_data_'))
  corpora = {'builtin': str(tmp / 'builtin')}
  t = time.perf_counter()
  m = prep.prepare('builtin', corpora['builtin'], builtin_max_bytes=16 << 20)
  prep_s = time.perf_counter() - t
  prep_mb = sum(s['bytes'] for s in m['splits'].values()) / 1e6
  if GUTENBERG.is_dir():
    corpora['gutenberg'] = str(tmp / 'gutenberg')
    prep.prepare('text', corpora['gutenberg'], paths=str(GUTENBERG))

  rows = []
  for corpus, prepared in corpora.items():
    for batch_size, seq_len in [(8, 512), (64, 512), (8, 4096)]:
      for workers in (0, 1, 2):
        mbs = throughput(prepared, workers=workers, batch_size=batch_size, seq_len=seq_len)
        rows.append(dict(corpus=corpus, workers=workers, batch_size=batch_size, seq_len=seq_len,
                         batch_bytes=batch_size * seq_len, mb_per_s=round(mbs, 1)))
        print(rows[-1], flush=True)

  head = next(r for r in rows if r['corpus'] == 'builtin' and r['workers'] == 0 and r['batch_size'] == 64)
  result = {'mb_per_s': head['mb_per_s'], 'workers': 0, 'batch_bytes': head['batch_bytes'],
            'batch_size': 64, 'seq_len': 512, 'corpus': 'builtin (16 MB of the Python stdlib)',
            'prepare_mb_per_s': round(prep_mb / prep_s, 1), 'rows': rows,
            'command': 'python bench/data_pipeline.py'}
  result['machine'] = report.machine_description()
  (RESULTS / 'data_pipeline.json').write_text(json.dumps(result, indent=1))
  report.write()  # BENCHMARKS.md is regenerated from the JSON

  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for corpus in corpora:
    for bs, sl in sorted({(r['batch_size'], r['seq_len']) for r in rows}):
      pts = [(r['workers'], r['mb_per_s']) for r in rows if (r['corpus'], r['batch_size'], r['seq_len']) == (corpus, bs, sl)]
      ax.plot(*zip(*pts), marker='o', label=f'{corpus} {bs}×{sl}')
  ax.axhline(50, color='gray', ls=':', label='target 50 MB/s')
  ax.set_xlabel('worker processes (0 = in-process)')
  ax.set_ylabel('packed MB/s')
  ax.set_xticks([0, 1, 2])
  ax.set_title('bltdiff data pipeline throughput (2-core CPU)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(RESULTS / 'data_pipeline.png', dpi=120)
  print(json.dumps({k: result[k] for k in ('mb_per_s', 'workers', 'batch_bytes', 'prepare_mb_per_s')}))


if __name__ == '__main__':
  app.run(main)

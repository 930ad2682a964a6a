"""Entropy scoring throughput (`data_prep.prepare --entropy_model`, the latent
chain's step 2) on 1 and on 8 devices, and what it means for OpenWebText on a
TPU v4-32.

  python bench/entropy_throughput.py     # -> bench/results/entropy_throughput.{json,png}, BENCHMARKS.md

Each device count runs in its own subprocess (JAX fixes its devices at start):
8 fake CPU devices with XLA_FLAGS=--xla_force_host_platform_device_count=8.
The model is configs/demo.py's entropy model (a byte AR, 128-byte chunks
overlapping by 64), randomly initialised and seeded: speed does not depend on
the weights. Two figures per device count:
  rows_bytes_per_s    full chunk rows through the jitted, sharded model call
                      (`EntropyModel.throughput`, batch_size rows per device);
  corpus_bytes_per_s  documents scored end to end (`EntropyModel.__call__`:
                      chunk planning with overlap, padding, host copies) on
                      the first bytes of each book in ../shared/data/gutenberg.
Both runs also hash their corpus entropies (float16, as stored): they must
be equal, the sharded path changing nothing.

The OpenWebText estimate is arithmetic, not a measurement: FLOPs per scored
byte of configs/owt.py's entropy model (bltdiff.flops.count of one call on
[batch, 1024] rows, divided by the bytes a row adds: chunk_len - overlap =
512) against the TPU v4 peak and an assumed utilisation (see ESTIMATE).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import report  # bench/report.py: BENCHMARKS.md from the JSON files

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app, flags  # noqa: E402

RESULTS = REPO / 'bench' / 'results'
GUTENBERG = REPO.parent / 'shared' / 'data' / 'gutenberg'
DEVICE_COUNTS = (1, 8)
BATCH_PER_DEVICE = 16
ESTIMATE = dict(
    corpus='OpenWebText', corpus_bytes=39_769_491_688,
    corpus_source='Hugging Face dataset card of Skylion007/openwebtext, dataset_info.dataset_size '
                  '(https://huggingface.co/datasets/Skylion007/openwebtext)',
    slice='TPU v4-32', chips=16,  # v4-32 counts TensorCores: 32 cores = 16 chips on 4 hosts
    peak_flops_per_chip=275e12,
    peak_source='Cloud TPU v4 docs, "Peak compute per chip: 275 teraflops (bf16 or int8)" '
                '(https://cloud.google.com/tpu/docs/v4)',
    utilisation=0.3,
    utilisation_why='assumed: a forward pass of a 25M-parameter model (512-wide matmuls, '
                    '1024-byte rows) keeps a v4 MXU far from its peak; 30% is a guess in the range '
                    'JAX transformer inference reaches at this width, not a measurement')

FLAGS = flags.FLAGS
flags.DEFINE_integer('worker_devices', 0, 'Internal: run one measurement on this many devices.')
flags.DEFINE_integer('corpus_bytes', 1 << 17, 'Bytes of the Gutenberg sample scored end to end.')
flags.DEFINE_integer('batches', 4, 'Model calls timed for rows_bytes_per_s.')


def demo_entropy_model():
  """(module config, run config) of configs/demo.py's entropy model."""
  from configs import demo
  run = demo.get_config().entropy_model
  return run.model, run


def corpus(max_bytes: int) -> list[bytes]:
  """The first max_bytes / 8 bytes of each of the first 8 books (documents)."""
  books = sorted(GUTENBERG.glob('*.txt'))[:8]
  if not books:
    raise SystemExit(f'{GUTENBERG}: no books to score')
  return [b.read_bytes()[:max_bytes // len(books)] for b in books]


def worker() -> dict:
  import jax
  import numpy as np
  from bltdiff import entropy
  from bltdiff.models import byte_ar
  model_config, run = demo_entropy_model()
  module = byte_ar.make_byte_ar(model_config)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))['params']
  scorer = entropy.entropy_model_from_module(module, params, chunk_len=int(run.data.seq_len),
                                             batch_size=BATCH_PER_DEVICE)
  rows_rate = scorer.throughput(num_batches=FLAGS.batches)
  docs = corpus(FLAGS.corpus_bytes)
  scorer(docs[:1])  # compiled already; warms the host path
  start = time.perf_counter()
  ents = scorer(docs)
  seconds = time.perf_counter() - start
  digest = hashlib.sha256(b''.join(e.astype(np.float16).tobytes() for e in ents)).hexdigest()
  total = sum(map(len, docs))
  return dict(devices=jax.local_device_count(), device=jax.devices()[0].device_kind,
              rows_per_call=scorer.rows_per_call, chunk_len=scorer.chunk_len,
              overlap=scorer.overlap, rows_bytes_per_s=round(rows_rate, 1),
              corpus_bytes=total, corpus_seconds=round(seconds, 2),
              corpus_bytes_per_s=round(total / seconds, 1), entropies_sha256=digest)


def measure(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  proc = subprocess.run([sys.executable, __file__, f'--worker_devices={devices}',
                         f'--corpus_bytes={FLAGS.corpus_bytes}', f'--batches={FLAGS.batches}'],
                        env=env, capture_output=True, text=True, timeout=900)
  if proc.returncode:
    raise SystemExit(f'worker on {devices} devices failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def owt_estimate() -> dict:
  """Hours to score OpenWebText on a v4-32 at ESTIMATE's peak and utilisation."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from bltdiff import entropy, flops
  from bltdiff.models import byte_ar
  from configs import owt
  run = owt.get_config().entropy_model
  module = byte_ar.make_byte_ar(run.model)
  chunk = int(run.data.seq_len)
  overlap = chunk // 2  # EntropyModel's default
  params = jax.eval_shape(module.init, jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))['params']
  tokens = jax.ShapeDtypeStruct((BATCH_PER_DEVICE, chunk), jnp.int32)
  call = flops.count(lambda p, t: entropy.entropy_from_logits(module.apply({'params': p}, t)),
                     params, tokens)
  per_byte = call / (BATCH_PER_DEVICE * (chunk - overlap))
  per_chip = ESTIMATE['peak_flops_per_chip'] * ESTIMATE['utilisation'] / per_byte
  seconds = ESTIMATE['corpus_bytes'] / (per_chip * ESTIMATE['chips'])
  n_params = sum(x.size for x in jax.tree.leaves(params))
  return dict(ESTIMATE, model='configs/owt.py entropy_model', params=int(n_params),
              chunk_len=chunk, overlap=overlap, flops_per_row=call / BATCH_PER_DEVICE,
              flops_per_scored_byte=round(per_byte), bytes_per_s_per_chip=round(per_chip),
              hours=round(seconds / 3600, 2))


def plot(rows: list[dict], path: Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 3.5))
  labels = [f"{r['devices']} device{'s' if r['devices'] > 1 else ''}" for r in rows]
  x = range(len(rows))
  ax.bar([i - 0.2 for i in x], [r['rows_bytes_per_s'] / 1e3 for r in rows], 0.4,
         label='full rows (model call)')
  ax.bar([i + 0.2 for i in x], [r['corpus_bytes_per_s'] / 1e3 for r in rows], 0.4,
         label='corpus end to end (overlap 1/2)')
  ax.set_xticks(list(x), labels)
  ax.set_ylabel('kB/s scored')
  ax.set_title('Entropy scoring, demo entropy model, fake CPU devices on 2 cores', fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  if FLAGS.worker_devices:
    print(json.dumps(worker()))
    return
  start, load_before = time.perf_counter(), os.getloadavg()[0]
  rows = [measure(n) for n in DEVICE_COUNTS]
  load = (load_before, os.getloadavg()[0])
  for r in rows:
    print(r, flush=True)
  same = len({r['entropies_sha256'] for r in rows}) == 1
  estimate = owt_estimate()
  notes = (f"Demo entropy model ({rows[0]['chunk_len']}-byte chunks, overlap {rows[0]['overlap']}, "
           f"{BATCH_PER_DEVICE} rows per device per call), random weights. The 8 devices are fake "
           f"CPU devices sharing this machine's 2 cores, so they show that the sharded path runs "
           f"and scores the same bytes (entropies identical on 1 and 8 devices: {same}), not a "
           f"speed-up. Measured under load: the machine was shared with a running benchmark "
           f"and other jobs (1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at "
           f"the end, on {os.cpu_count()} cores), so the absolute rates are low and noisy. OpenWebText on a {estimate['slice']} ({estimate['chips']} chips), not "
           f"measured: {estimate['flops_per_scored_byte']:.3g} FLOPs per scored byte for "
           f"configs/owt.py's entropy model ({estimate['params'] / 1e6:.1f}M parameters, "
           f"{estimate['chunk_len']}-byte chunks overlapping by {estimate['overlap']}; "
           f"bltdiff.flops), at {estimate['utilisation']:.0%} of {estimate['peak_flops_per_chip'] / 1e12:.0f} "
           f"TFLOP/s per chip ({estimate['peak_source']}) is "
           f"{estimate['bytes_per_s_per_chip'] / 1e6:.2f} MB/s per chip; "
           f"{estimate['corpus_bytes'] / 1e9:.1f} GB ({estimate['corpus_source']}) then take "
           f"about {estimate['hours']:.1f} h. The utilisation is an assumption "
           f"({estimate['utilisation_why']}); reading and writing the shards is not counted.")
  result = dict(rows=rows, same_entropies=same, owt_estimate=estimate, notes=notes,
                load_average=[round(x, 2) for x in load],
                total_seconds=round(time.perf_counter() - start, 1),
                command='python bench/entropy_throughput.py', machine=report.machine_description())
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / 'entropy_throughput.json').write_text(json.dumps(result, indent=1))
  plot(rows, RESULTS / 'entropy_throughput.png')
  report.write()  # BENCHMARKS.md is regenerated from the JSON
  print(notes)
  if not same:
    raise SystemExit('entropies differ between device counts')


if __name__ == '__main__':
  app.run(main)

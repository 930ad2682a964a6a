"""Train-step throughput: bytes/s, FLOPs per step (XLA cost analysis) and MFU,
for the byte MDLM and the latent MDLM.

  python bench/train_throughput.py                      # CPU size (this machine)
  python bench/train_throughput.py --preset=accelerator # OWT size, bf16: H200 / TPU

Writes bench/results/train_throughput.json ({"rows": [...], "notes", "machine"}),
bench/results/train_throughput.png, and regenerates BENCHMARKS.md.

What is timed: the jitted train step of bltdiff.train (forward, backward, AdamW
update) on random batches already on the device, after compilation and two
warm-up steps, `--steps` steps with a block at the end. No data pipeline, no
host transfers, no eval: the model's ceiling, not a training run's average.

MFU = (XLA FLOPs of the compiled step per device) x steps/s / peak FLOP/s per
device. The peak comes from bltdiff.train.PEAK_FLOPS_BF16 by device kind
(H200: 989e12 dense bf16) or --peak_flops; on a CPU it is unknown and MFU is
left empty unless --peak_flops is given. XLA counts what it executes, so this
is strictly hardware-FLOPs utilization (the same as model FLOPs here: no remat).

On an H200 (or any GPU): install the CUDA build of the pinned jax
(`pip install "jax[cuda12]==0.10.2"`), then
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 python bench/train_throughput.py --preset=accelerator
On a TPU VM: `pip install "jax[tpu]==0.10.2"`, same command (one host; all its
chips form a data-parallel mesh, so batch_size is per device x devices).
The accelerator preset is configs/owt.py (latent MDLM, ~106M-parameter latent
transformer, 4096 bytes, 1024 patch slots, bf16) and a byte MDLM of the same
width and depth over the 4096 bytes; the issue's target is >= 40% MFU for the
latent transformer. Lower --batch_per_device if it does not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # bench/report.py: BENCHMARKS.md from the JSON files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_config(path: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location('cfg', ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def systems(preset: str, dtype: str | None):
  """[(name, config)] for the preset."""
  import ml_collections
  out = []
  if preset == 'cpu':
    byte = load_config('configs/demo.py')
    byte.data.seq_len = 256
    latent = load_config('configs/latent_demo.py')
    latent.data.seq_len = 256
  else:
    latent = load_config('configs/owt.py')
    byte = load_config('configs/owt.py')
    m = latent.model
    byte.model = ml_collections.ConfigDict(dict(
        kind='byte_mdlm', dim=m.dim, num_layers=m.num_layers, num_heads=m.num_heads,
        mlp_dim=m.mlp_dim, dropout=0.0, schedule='loglinear', dtype=m.dtype))
    byte.data.use_entropies = False
    del byte['patching']
  for name, c in (('byte_mdlm', byte), ('latent_mdlm', latent)):
    if dtype:
      c.model.dtype = dtype
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    out.append((name, c))
  return out


def measure(config, batch_size: int, steps: int, peak: float) -> dict:
  import jax
  import numpy as np
  from bltdiff import sharding, train
  config.train.batch_size = batch_size
  mesh, model, tx, lr, _, shardings = train.setup(config, '')
  rng = np.random.RandomState(0)
  n = config.data.seq_len

  def batch():
    b = {'tokens': rng.randint(32, 127, (batch_size, n)).astype(np.int32)}
    if config.data.get('use_entropies', False):
      b['entropies'] = rng.gamma(1.0, 1.0, (batch_size, n)).astype(np.float32)
    return sharding.global_batch(b, mesh)

  with sharding.activate(mesh):
    state = train.create_train_state(model, tx, config, mesh, shardings)
    step = train.make_train_step(model, tx, lr, mesh, shardings,
                                 train.train_metric_names(model, config))
    batches = [batch() for _ in range(4)]
    start = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - start
    flops = train.cost_flops(compiled)
    for i in range(2):  # warm-up
      state, metrics = compiled(state, batches[i % 4])
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
      state, metrics = compiled(state, batches[i % 4])
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - start
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  devices = jax.device_count()
  row = dict(batch_size=batch_size, seq_len=n, dtype=config.model.get('dtype', 'float32'),
             params=params, steps=steps, step_s=elapsed / steps,
             bytes_per_s=steps * batch_size * n / elapsed,
             bytes_per_s_per_device=steps * batch_size * n / elapsed / devices,
             flops_per_step=flops, tflops_per_s_per_device=flops * steps / elapsed / 1e12,
             mfu=train.mfu(flops, steps, elapsed, peak) if peak else None,
             peak_flops_per_device=peak or None, compile_s=compile_s,
             device=f'{devices} x {jax.devices()[0].device_kind}',
             final_loss=float(metrics.compute()['loss']))
  return row


def plot(rows, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  names = [r['system'] for r in rows]
  axes[0].bar(names, [r['bytes_per_s'] for r in rows], color=['C0', 'C1'][:len(rows)])
  axes[0].set_ylabel('train bytes / s')
  axes[1].bar(names, [r['tflops_per_s_per_device'] for r in rows], color=['C0', 'C1'][:len(rows)])
  axes[1].set_ylabel('achieved TFLOP/s per device')
  for ax in axes:
    ax.set_title(f"{rows[0]['device']}, batch {rows[0]['batch_size']} x {rows[0]['seq_len']} B",
                 fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=['cpu', 'accelerator'], default='cpu')
  parser.add_argument('--batch_per_device', type=int, default=None,
                      help='default: 8 (cpu preset: 8 in all)')
  parser.add_argument('--steps', type=int, default=None, help='timed steps (cpu 5, else 20)')
  parser.add_argument('--peak_flops', type=float, default=0.0,
                      help='peak FLOP/s per device; default: the table by device kind')
  parser.add_argument('--dtype', default=None, help='override model.dtype (float32/bfloat16)')
  parser.add_argument('--systems', default='byte_mdlm,latent_mdlm')
  parser.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'train_throughput.json'))
  args = parser.parse_args()
  import jax
  from bltdiff import train
  peak = train.peak_flops_per_device(args.peak_flops)
  steps = args.steps or (5 if args.preset == 'cpu' else 20)
  per_device = args.batch_per_device or 8
  batch_size = per_device if args.preset == 'cpu' else per_device * jax.device_count()
  wanted = args.systems.split(',')
  rows = []
  for name, config in systems(args.preset, args.dtype):
    if name not in wanted:
      continue
    row = dict(system=name, **measure(config, batch_size, steps, peak))
    print(json.dumps(row), flush=True)
    rows.append(row)
  notes = (f'Preset `{args.preset}`: {steps} timed train steps (forward + backward + AdamW) on '
           f'random batches after compilation and 2 warm-up steps. ')
  if not peak:
    notes += ('MFU is empty: the peak FLOP/s of this device kind is unknown (CPU); pass '
              '--peak_flops to compute it. ')
  if args.preset == 'cpu':
    notes += ('The H200 measurement (`--preset=accelerator`, target >= 40% MFU for the latent '
              'transformer) has not been run: no GPU was available in the session that wrote '
              'this script.')
  out = dict(rows=rows, notes=notes, preset=args.preset, machine=report.machine_description(),
             command='python bench/train_throughput.py' +
             ('' if args.preset == 'cpu' else f' --preset={args.preset}'))
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)
  plot(rows, str(Path(args.out).with_suffix('.png')))
  report.write()
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()

"""Train-step throughput: bytes/s, FLOPs per step (bltdiff.flops) and MFU,
for the byte MDLM and the latent MDLM.

  python bench/train_throughput.py                      # CPU size (this machine)
  python bench/train_throughput.py --preset=accelerator # OWT size, bf16: H200 / TPU

Writes bench/results/train_throughput.json ({"rows": [...], "notes", "machine"}),
bench/results/train_throughput.png, and regenerates BENCHMARKS.md.

What is timed: the jitted train step of bltdiff.training.steps (forward, backward, AdamW
update) on random batches already on the device, after compilation and two
warm-up steps, `--steps` steps with a block at the end. No data pipeline, no
host transfers, no eval: the model's ceiling, not a training run's average.

MFU = (FLOPs of the step per device, bltdiff.flops) x steps/s / peak FLOP/s per
device. The peak comes from bltdiff.training.mfu.PEAK_FLOPS_BF16 by device kind
(H200: 989e12 dense bf16) or --peak_flops; on a CPU it is unknown and MFU is
left empty unless --peak_flops is given.

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

import json
import sys
import time
from pathlib import Path

from absl import app, flags

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
  """[(name, config)] for the preset: byte MDLM with the latent transformer's
  shape, and the latent MDLM."""
  from configs import common
  latent = load_config('configs/demo.py' if preset == 'cpu' else 'configs/owt.py')
  m = latent.model
  byte = common.run(model=common.byte_model('byte_mdlm', dim=m.dim, num_layers=m.num_layers,
                                            num_heads=m.num_heads, mlp_dim=m.mlp_dim,
                                            dtype=m.dtype),
                    data=common.data_config(**dict(latent.data.to_dict(), use_entropies=False)),
                    train=latent.train)
  out = []
  for name, c in (('byte_mdlm', byte), ('latent_mdlm', latent)):
    if dtype:
      c.model.dtype = dtype
    c.mesh = common.mesh_config()
    out.append((name, c))
  return out


def measure(config, batch_size: int, steps: int, peak: float) -> dict:
  import jax
  import numpy as np
  from bltdiff import flops, sharding
  from bltdiff.training import mfu, state as train_state, steps as train_steps
  config.train.batch_size = batch_size
  run = train_state.setup(config)
  mesh, model, tx, lr, shardings = run.mesh, run.model, run.tx, run.lr_schedule, run.shardings
  rng = np.random.RandomState(0)
  n = config.data.seq_len

  def batch():
    b = {'tokens': rng.randint(32, 127, (batch_size, n)).astype(np.int32)}
    if config.data.use_entropies:
      b['entropies'] = rng.gamma(1.0, 1.0, (batch_size, n)).astype(np.float32)
    return sharding.global_batch(b, mesh)

  with sharding.activate(mesh):
    state = train_state.create_train_state(model, tx, config, mesh, shardings)
    step = train_steps.make_train_step(model, tx, lr, mesh, shardings,
                                       train_steps.train_metric_names(model, config))
    batches = [batch() for _ in range(4)]
    start = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - start
    step_flops = flops.count(step, state, batches[0]) / jax.device_count()  # per device
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
  row = dict(batch_size=batch_size, seq_len=n, dtype=config.model.dtype,
             params=params, steps=steps, step_s=elapsed / steps,
             bytes_per_s=steps * batch_size * n / elapsed,
             bytes_per_s_per_device=steps * batch_size * n / elapsed / devices,
             flops_per_step_per_device=step_flops,
             tflops_per_s_per_device=step_flops * steps / elapsed / 1e12,
             mfu=mfu.mfu(step_flops, steps, elapsed, peak) if peak else None,
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


def define_flags():
  """The script's flags (defined when it runs as a script, so that another
  benchmark can import it)."""
  flags.DEFINE_enum('preset', 'cpu', ['cpu', 'accelerator'], 'Model sizes: demo or OpenWebText.')
  flags.DEFINE_integer('batch_per_device', None, 'Default: 8 (cpu preset: 8 in all).')
  flags.DEFINE_integer('steps', None, 'Timed steps (cpu 5, else 20).')
  flags.DEFINE_float('peak_flops', 0.0, 'Peak FLOP/s per device; default: the table by device kind.')
  flags.DEFINE_string('dtype', None, 'Override model.dtype (float32/bfloat16).')
  flags.DEFINE_list('systems', ['byte_mdlm', 'latent_mdlm'], 'Systems to measure.')
  flags.DEFINE_string('out', str(ROOT / 'bench' / 'results' / 'train_throughput.json'),
                      'Results JSON.')


def main(argv):
  del argv
  args = flags.FLAGS
  import jax
  from bltdiff.training import mfu
  peak = mfu.peak_flops_per_device(args.peak_flops)
  steps = args.steps or (5 if args.preset == 'cpu' else 20)
  per_device = args.batch_per_device or 8
  batch_size = per_device if args.preset == 'cpu' else per_device * jax.device_count()
  wanted = args.systems
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
  define_flags()
  app.run(main)

"""launch/colab_demo.ipynb runs top to bottom on the CPU against this checkout.

The notebook reads its CI settings from the environment (BLTDIFF_SOURCE: this
checkout, no clone; BLTDIFF_PYTHON: this interpreter, no install; tiny
training flags), so the whole chain of configs/demo.py (entropy model,
entropies, threshold calibration, latent MDLM, samples, eval) runs in a couple
of minutes on 2 cores. Its install cell is exercised apart, printing its
commands (BLTDIFF_INSTALL_DRY_RUN=1) for a TPU runtime.
"""

import json
import os
import sys

import nbclient
import nbformat

from conftest import FAST_COMPILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'launch', 'colab_demo.ipynb')

# A few steps of each stage; 0.6 MB of the built-in corpus with a 10% validation split.
TINY_TRAIN_FLAGS = ' '.join([
    '--config.data.builtin_max_bytes=600000', '--config.data.validation_fraction=0.1',
    '--config.entropy_model.data.builtin_max_bytes=600000',
    '--config.entropy_model.data.validation_fraction=0.1',
    '--config.entropy_model.train.num_steps=20', '--config.entropy_model.train.log_every=10',
    '--config.entropy_model.train.eval_every=20', '--config.entropy_model.train.eval_batches=1',
    '--config.entropy_model.train.checkpoint_every=20',
    '--config.patching.calibrate_bytes=65536',
    '--config.train.num_steps=20', '--config.train.log_every=10', '--config.train.eval_every=20',
    '--config.train.eval_batches=2', '--config.train.eval_t_samples=1',
    '--config.train.sample_every=20', '--config.train.checkpoint_every=20',
    '--config.sample.num_samples=1', '--config.sample.steps=8',
])


def read_notebook():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  return nb


def ci_env(workdir, **extra):
  env = dict(os.environ)
  # The demo's model is big enough that XLA's optimizations pay for themselves:
  # the notebook runs slower at conftest's FAST_COMPILE.
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(FAST_COMPILE, '').strip()
  env.update(BLTDIFF_SOURCE=REPO, BLTDIFF_PYTHON=sys.executable, BLTDIFF_WORKDIR=str(workdir),
             BLTDIFF_TRAIN_FLAGS=TINY_TRAIN_FLAGS, BLTDIFF_NUM_SAMPLES='1',
             BLTDIFF_SAMPLE_FLAGS='--steps=8', JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  env.update(extra)
  return env


def execute(nb, cwd, env, timeout=600):
  client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name='python3',
                                   resources={'metadata': {'path': str(cwd)}})
  client.execute(env=env)
  return nb


def outputs_text(cell) -> str:
  parts = []
  for out in cell.get('outputs', []):
    if out.get('output_type') == 'stream':
      parts.append(out.get('text', ''))
    elif 'data' in out:
      parts.append(out['data'].get('text/plain', ''))
  return ''.join(parts)


def test_notebook_text_and_metadata():
  nb = read_notebook()
  first = nb.cells[0]
  assert first.cell_type == 'code'
  # The first cell says where the code comes from and sets the clone URL.
  assert 'Where the code comes from' in first.source
  assert "REPO_URL = ''" in first.source and 'BLTDIFF_SOURCE' in first.source
  everything = '\n'.join(c.source for c in nb.cells)
  assert 'YOUR_ORG' not in everything
  # No restart instruction (a restart loses the cells' state: the next cell
  # would fail); the install goes into its own venv instead.
  for phrase in ('restart the runtime', 'restart runtime', 'runtime → restart'):
    assert phrase not in everything.lower(), phrase
  # Today's demo: configs/demo.py and the whole chain.
  text = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown').lower()
  for words in ('configs/demo.py', 'entropy model', 'calibrat', 'latent mdlm', 'built-in corpus'):
    assert words in text, words
  # No accelerator pinned in the metadata: any runtime; the install cell adapts.
  assert 'accelerator' not in nb.metadata
  # Commands fail loudly: no `!command` shell escapes.
  assert not any(line.lstrip().startswith('!') for c in nb.cells if c.cell_type == 'code'
                 for line in c.source.splitlines())


def test_install_cell_on_a_tpu_runtime(tmp_path):
  # The parameter, source and install cells alone, the runtime forced to TPU
  # and the commands printed, not run; then the accelerator probe on a fake
  # /sys and /dev tree.
  nb = read_notebook()
  install = next(i for i, c in enumerate(nb.cells) if 'def detect_accelerator' in c.source)
  nb.cells = nb.cells[:install + 1]
  fake = tmp_path / 'root'
  tpu = fake / 'sys/bus/pci/devices/0000:00:04.0'
  tpu.mkdir(parents=True)
  (tpu / 'vendor').write_text('0x1ae0\n')
  (tpu / 'device').write_text('0x0063\n')   # TPU v5e
  nic_root = tmp_path / 'nic'
  nic = nic_root / 'sys/bus/pci/devices/0000:00:05.0'
  nic.mkdir(parents=True)
  (nic / 'vendor').write_text('0x1ae0\n')   # Google vendor, not a TPU (gVNIC)
  (nic / 'device').write_text('0x0042\n')
  gpu_root = tmp_path / 'gpu'
  (gpu_root / 'dev').mkdir(parents=True)
  (gpu_root / 'dev/nvidia0').write_text('')
  nb.cells.append(nbformat.v4.new_code_cell(
      f'print("probe:", detect_accelerator({str(fake)!r}), detect_accelerator({str(nic_root)!r}),'
      f' detect_accelerator({str(gpu_root)!r}), detect_accelerator({str(tmp_path / "empty")!r}))'))
  env = ci_env(tmp_path / 'run', BLTDIFF_ACCELERATOR='tpu', BLTDIFF_INSTALL_DRY_RUN='1')
  del env['BLTDIFF_PYTHON']
  execute(nb, tmp_path, env, timeout=120)
  out = outputs_text(nb.cells[install])
  jax_pin = next(line.split('==')[1].strip() for line in open(os.path.join(REPO, 'requirements.txt'))
                 if line.startswith('jax=='))
  assert f"jax[tpu]=={jax_pin}" in out
  assert '--python 3.11' in out and "-r requirements.txt" in out and '-e .' in out
  assert 'cuda' not in out
  assert outputs_text(nb.cells[-1]).split() == ['probe:', 'tpu', 'cpu', 'gpu', 'cpu']


def test_notebook_runs_top_to_bottom_on_cpu(tmp_path):
  nb = read_notebook()
  workdir = tmp_path / 'demo'
  execute(nb, tmp_path, ci_env(workdir))
  # Every stage of the chain left its output in the run directory.
  assert (workdir / 'entropy_model' / 'config.json').exists()
  calibration = json.loads((workdir / 'calibration.json').read_text())
  assert calibration['threshold'] > 0
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert any('eval_bpb' in r for r in rows) and any('train_bpb' in r for r in rows)
  assert (workdir / 'samples' / 'notebook.txt').exists()
  assert list(workdir.glob('eval_step_*.json'))
  everything = ''.join(outputs_text(c) for c in nb.cells)
  assert f'code: {REPO} (from BLTDIFF_SOURCE)' in everything
  assert 'runtime: cpu' in everything and 'nothing installed' in everything
  assert 'eval_bpb' in everything
  # The patch plot and the training curves are displayed as images.
  images = [o for c in nb.cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert len(images) == 2

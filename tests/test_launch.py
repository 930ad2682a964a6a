"""The launch recipes (launch/*.sh), checked without a TPU, a GPU or a cluster.

- every script parses (`bash -n`), and so does every command it sends to a
  TPU worker over ssh;
- the dry runs (`--dry_run`) print gcloud / sbatch / srun / ssh commands whose
  flags are all in the tables below, taken from the documentation each script
  cites (gcloud reference pages, Slurm's sbatch and srun manuals), and whose
  bltdiff flags are flags bltdiff.main and launch/prepare_run.py define;
- a dry run prints exactly the commands a real run executes (a real run with
  stub gcloud, tar, mkdir, sbatch, srun, ssh, uv and python on PATH, which only
  record their arguments);
- the installs use the pinned jax and a Python that requires-python admits,
  the TPU run directory is a gs:// URL, nothing mounts a bucket;
- the SLURM recipe is one process per node owning all its GPUs, finds the
  checkout under sbatch (SLURM_SUBMIT_DIR) and creates its logs directory;
- where the Google Cloud CLI is installed, gcloud's own parser accepts every
  printed gcloud command (without credentials it stops at authentication).
"""

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_SCRIPT = os.path.join(REPO, 'launch', 'tpu_vm_pod.sh')
GPU_SCRIPT = os.path.join(REPO, 'launch', 'gpu_multinode.sh')

# ---- documented flags ----------------------------------------------------------
# gcloud, from the SYNOPSIS of each reference page
# (https://cloud.google.com/sdk/gcloud/reference/<group>/<command>).
GCLOUD_WIDE_FLAGS = {  # https://cloud.google.com/sdk/gcloud/reference (GLOBAL FLAGS)
    '--access-token-file', '--account', '--billing-project', '--configuration', '--flags-file',
    '--flatten', '--format', '--help', '--impersonate-service-account', '--log-http', '--project',
    '--quiet', '-q', '--trace-token', '--user-output-enabled', '--no-user-output-enabled',
    '--verbosity', '-h'}
GCLOUD_FLAGS = {
    ('compute', 'tpus', 'tpu-vm', 'create'): {
        '--zone', '--version', '--async', '--boot-disk', '--data-disk', '--description',
        '--internal-ips', '--labels', '--metadata', '--metadata-from-file', '--network',
        '--preemptible', '--queue-count', '--range', '--reserved', '--scopes', '--service-account',
        '--shielded-secure-boot', '--spot', '--subnetwork', '--tags', '--accelerator-type',
        '--topology', '--type'},
    ('compute', 'tpus', 'tpu-vm', 'ssh'): {
        '--dry-run', '--force-key-file-overwrite', '--internal-ip', '--plain', '--ssh-flag',
        '--ssh-key-file', '--strict-host-key-checking', '--worker', '--zone', '--command',
        '--output-directory', '--ssh-key-expiration', '--ssh-key-expire-after'},
    ('compute', 'tpus', 'tpu-vm', 'scp'): {
        '--compress', '--dry-run', '--force-key-file-overwrite', '--internal-ip', '--plain',
        '--recurse', '--scp-flag', '--ssh-key-file', '--strict-host-key-checking', '--worker',
        '--zone', '--ssh-key-expiration', '--ssh-key-expire-after'},
    ('compute', 'tpus', 'tpu-vm', 'delete'): {'--zone', '--async'},
    ('storage', 'cp'): {
        '--additional-headers', '--all-versions', '-A', '--no-clobber', '-n', '--content-md5',
        '--continue-on-error', '-c', '--daisy-chain', '-D', '--do-not-decompress',
        '--include-managed-folders', '--manifest-path', '-L', '--preserve-posix', '-P',
        '--print-created-message', '-v', '--read-paths-from-stdin', '-I', '--recursive', '-R', '-r',
        '--skip-unsupported', '-U', '--storage-class', '-s', '--canned-acl', '--predefined-acl',
        '-a', '--preserve-acl', '--no-preserve-acl', '-p', '--gzip-in-flight', '-j',
        '--gzip-in-flight-all', '-J', '--gzip-local', '-z', '--gzip-local-all', '-Z',
        '--ignore-symlinks', '--preserve-symlinks', '--decryption-keys', '--encryption-key',
        '--cache-control', '--content-disposition', '--content-encoding', '--content-language',
        '--content-type', '--custom-time', '--clear-custom-metadata', '--custom-metadata',
        '--remove-custom-metadata', '--update-custom-metadata', '--if-generation-match',
        '--if-metageneration-match', '--retain-until', '--retention-mode'},
    ('storage', 'cat'): {'--additional-headers', '--display-url', '-d', '--range', '-r',
                         '--decryption-keys'},
}
# Slurm: the long options of https://slurm.schedmd.com/srun.html and
# https://slurm.schedmd.com/sbatch.html (OPTIONS sections of srun.1 and
# sbatch.1, Slurm 26.11).
SRUN_FLAGS = set('''
--account --acctg-freq --async --bb --bbf --bcast --bcast-exclude --begin --chdir
--cluster-constraint --clusters --comment --compress --consolidate-segments --constraint
--container --container-id --contiguous --core-spec --cores-per-socket --cpu-bind --cpu-freq
--cpus-per-gpu --cpus-per-task --deadline --delay-boot --dependency --disable-status
--distribution --epilog --error --exact --exclude --exclusive --export --external-launcher
--extra --extra-node-info --gpu-bind --gpu-freq --gpus --gpus-per-node --gpus-per-socket
--gpus-per-task --gres --gres-flags --help --het-group --hint --ignore-signals --immediate
--input --job-name --jobid --kill-on-bad-exit --label --licenses --mail-type --mail-user
--mcs-label --mem --mem-bind --mem-per-cpu --mem-per-gpu --mem-update --mincpus --mpi
--msg-timeout --multi-prog --network --nice --no-allocate --no-kill --nodefile --nodelist
--nodes --ntasks --ntasks-per-core --ntasks-per-gpu --ntasks-per-node --ntasks-per-socket
--oom-kill-step --open-mode --output --overcommit --overlap --oversubscribe --parsable
--partition --prefer --preserve-env --priority --profile --prolog --propagate --pty --qos
--quiet --quit-on-interrupt --reboot --relative --reservation --resources --resv-ports
--runtime --segment --send-libs --signal --slurmd-debug --sockets-per-node --spread-job
--spread-segments --stepmgr --switches --task-epilog --task-prolog --test-only --thread-spec
--threads --threads-per-core --time --time-min --tmp --treewidth --tres-bind --tres-per-task
--unbuffered --usage --use-min-nodes --verbose --version --wait --wait-for-children --wckey
--x11'''.split())
SBATCH_FLAGS = set('''
--account --acctg-freq --array --batch --bb --bbf --begin --chdir --cluster-constraint
--clusters --comment --consolidate-segments --constraint --container --container-id
--contiguous --core-spec --cores-per-socket --cpu-freq --cpus-per-gpu --cpus-per-task
--deadline --delay-boot --dependency --distribution --error --exclude --exclusive --export
--export-file --extra --extra-node-info --get-user-env --gid --gpu-bind --gpu-freq --gpus
--gpus-per-node --gpus-per-socket --gpus-per-task --gres --gres-flags --help --hint
--ignore-pbs --input --job-name --kill-on-invalid-dep --licenses --mail-type --mail-user
--mcs-label --mem --mem-bind --mem-per-cpu --mem-per-gpu --mem-update --mincpus --network
--nice --no-kill --no-requeue --nodefile --nodelist --nodes --ntasks --ntasks-per-core
--ntasks-per-gpu --ntasks-per-node --ntasks-per-socket --oom-kill-step --open-mode --output
--overcommit --oversubscribe --parsable --partition --prefer --priority --profile --propagate
--qos --quiet --reboot --requeue --reservation --resources --resv-ports --runtime --segment
--signal --sockets-per-node --spread-job --spread-segments --stepmgr --switches --test-only
--thread-spec --threads-per-core --time --time-min --tmp --tres-bind --tres-per-task --uid
--usage --use-min-nodes --verbose --version --wait --wait-all-nodes --wckey --wrap'''.split())
# uv (https://docs.astral.sh/uv/reference/cli/): the subcommands and options used.
UV_FLAGS = {('venv',): {'--clear', '--python'}, ('pip', 'install'): {'--python', '-r', '-e'}}

# The runtime (TPU software version) for JAX per TPU generation:
# https://cloud.google.com/tpu/docs/runtimes
RUNTIMES = {'v4-32': 'tpu-ubuntu2204-base', 'v4-8': 'tpu-ubuntu2204-base',
            'v5litepod-16': 'v2-alpha-tpuv5-lite', 'v5p-8': 'v2-alpha-tpuv5',
            'v6e-8': 'v2-alpha-tpuv6e'}

SHELL_OPERATORS = {'&&', '||', ';', '|', '>', '>&', '&', '&)', '(', ')'}


# ---- helpers -------------------------------------------------------------------
def pinned(name: str) -> str:
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    for line in f:
      if line.split('==')[0].strip().lower() == name:
        return line.split('==')[1].split('#')[0].strip()
  raise AssertionError(f'{name} is not pinned in requirements.txt')


def base_env(**settings) -> dict:
  """A clean environment: nothing of the caller's settings leaks in."""
  env = {'PATH': os.environ['PATH'], 'HOME': os.environ.get('HOME', '/tmp'), 'LC_ALL': 'C.UTF-8'}
  env.update({k: str(v) for k, v in settings.items()})
  return env


def run_script(script, args, env, check=True, cwd=REPO):
  proc = subprocess.run(['bash', script, *args], env=env, cwd=cwd, capture_output=True,
                        text=True, timeout=60)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def dry_run(script, steps, **settings) -> list[list[str]]:
  """The commands a dry run prints, each split as a shell would split it."""
  proc = run_script(script, ['--dry_run', *steps], base_env(**settings))
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def tpu_settings(**extra):
  return {**dict(PROJECT='my-project', BUCKET='my-bucket', ZONE='us-central2-b', TPU_NAME='pod',
                 ACCELERATOR='v4-32'), **extra}


def gpu_settings(**extra):
  return {**dict(GPUS_PER_NODE='8', NUM_NODES='2', CONFIG='configs/owt.py',
                 WORKDIR='/shared/runs/owt'), **extra}


def options(argv) -> list[str]:
  """The option names of a command line (the part before '=')."""
  return [a.split('=', 1)[0] for a in argv if a.startswith('-') and a != '-']


def gcloud_subcommand(argv):
  assert argv[0] == 'gcloud', argv
  for key in GCLOUD_FLAGS:
    if tuple(argv[1:1 + len(key)]) == key:
      return key
  raise AssertionError(f'gcloud command not in the documented table: {argv[:5]}')


def shell_words(command: str) -> list[str]:
  """A shell command line as words, its operators (; && | > ( )...) as words of their own."""
  lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def remote_commands(commands) -> list[str]:
  """The shell commands sent to TPU workers (gcloud ... ssh --command=...)."""
  return [a.split('=', 1)[1] for argv in commands if argv[:5] == ['gcloud', 'compute', 'tpus',
                                                                  'tpu-vm', 'ssh']
          for a in argv if a.startswith('--command=')]


def program_args(tokens, program) -> list[list[str]]:
  """Arguments following each occurrence of `program` (e.g. 'bltdiff.main' after
  `python -m`, or 'launch/prepare_run.py') in a token list, up to a shell operator."""
  found = []
  for i, token in enumerate(tokens):
    if token == program or token.endswith('/' + program):
      args = []
      for t in tokens[i + 1:]:
        if t in SHELL_OPERATORS:
          break
        args.append(t)
      found.append(args)
  return found


def main_flag_names() -> set[str]:
  """The flags `python -m bltdiff.main` defines (its own and the sampling flags)."""
  from absl import flags
  import bltdiff.main  # noqa: F401  (defines the flags)
  by_module = flags.FLAGS.flags_by_module_dict()
  return {'--' + f.name for module in ('bltdiff.main', 'bltdiff.sample_flags')
          for f in by_module[module]}


def assert_bltdiff_flags(args, allowed):
  for flag in options(args):
    assert flag in allowed or flag.startswith('--config.'), f'{flag} is not a flag of bltdiff'


# ---- every script --------------------------------------------------------------
@pytest.mark.parametrize('script', sorted(f for f in os.listdir(os.path.join(REPO, 'launch'))
                                          if f.endswith('.sh')))
def test_bash_syntax(script):
  proc = subprocess.run(['bash', '-n', os.path.join(REPO, 'launch', script)], capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr
  text = open(os.path.join(REPO, 'launch', script)).read()
  assert 'set -euo pipefail' in text


def test_requires_python_matches_the_pins():
  from packaging.specifiers import SpecifierSet
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    project = SpecifierSet(tomllib.load(f)['project']['requires-python'])
  pins = {}
  for name in ('jax', 'jaxlib', 'numpy', 'flax', 'orbax-checkpoint', 'grain'):
    assert importlib.metadata.version(name) == pinned(name), f'{name} installed != pinned'
    pins[name] = SpecifierSet(importlib.metadata.metadata(name)['Requires-Python'] or '')
  # bltdiff installs exactly where its pinned stack does: 3.10 refused, 3.11 admitted.
  assert '3.10' not in project and '3.11' in project
  assert all('3.11' in spec for spec in pins.values()), pins
  assert any('3.10' not in spec for spec in pins.values())
  # The Python the recipes and the notebook create venvs with is admitted too.
  for path in (TPU_SCRIPT, GPU_SCRIPT):
    version = re.search(r'PYTHON_VERSION="\$\{PYTHON_VERSION:-([0-9.]+)\}"', open(path).read())
    assert version and version.group(1) in project and all(version.group(1) in s for s in pins.values())


def test_no_bucket_mount_anywhere():
  # gcsfuse is named only in comments that say why it is not used.
  for name in os.listdir(os.path.join(REPO, 'launch')):
    if name.endswith(('.sh', '.py', '.ipynb')):
      for line in open(os.path.join(REPO, 'launch', name)):
        code = line.split('#', 1)[0] if name.endswith(('.sh', '.py')) else line
        assert 'gcsfuse' not in code and '/mnt/' not in code, f'{name}: {line}'


# ---- TPU VM pod ----------------------------------------------------------------
def test_tpu_dry_run_uses_documented_gcloud_flags():
  commands = dry_run(TPU_SCRIPT, ['all', 'status', 'fetch', 'delete'], **tpu_settings(SPOT='1'))
  gcloud = [c for c in commands if c[0] == 'gcloud']
  assert {gcloud_subcommand(c) for c in gcloud} == set(GCLOUD_FLAGS)  # every step shows up
  for argv in gcloud:
    key = gcloud_subcommand(argv)
    for flag in options(argv[1 + len(key):]):
      assert flag in GCLOUD_FLAGS[key] | GCLOUD_WIDE_FLAGS, f'gcloud {" ".join(key)} {flag}'
  # Everything else the recipe runs here is local: the source tarball and a directory.
  assert {c[0] for c in commands} == {'gcloud', 'tar', 'mkdir'}
  create = next(c for c in gcloud if gcloud_subcommand(c)[-1] == 'create')
  assert '--spot' in create and '--accelerator-type=v4-32' in create
  ssh = [c for c in gcloud if gcloud_subcommand(c)[-1] == 'ssh']
  assert all(('--worker=all' in c) != ('--worker=0' in c) for c in ssh)


@pytest.mark.parametrize('accelerator, runtime', sorted(RUNTIMES.items()))
def test_tpu_runtime_per_generation(accelerator, runtime):
  create = dry_run(TPU_SCRIPT, ['create'], **tpu_settings(ACCELERATOR=accelerator))[0]
  assert f'--version={runtime}' in create


def test_tpu_install_python_and_pinned_jax():
  commands = dry_run(TPU_SCRIPT, ['install'], **tpu_settings())
  (remote,) = remote_commands(commands)
  tokens = shell_words(remote)
  # uv pinned, from its documented installer URL; a venv with uv's own Python 3.11.
  assert re.search(r'https://astral\.sh/uv/\d+\.\d+\.\d+/install\.sh', remote)
  venv = tokens.index('venv')
  assert tokens[venv + 1:venv + 5] == ['--clear', '--python', '3.11', '.venv']
  for subcommand, allowed in UV_FLAGS.items():
    start = next(i for i in range(len(tokens)) if tuple(tokens[i:i + len(subcommand)]) == subcommand)
    args = tokens[start + len(subcommand):tokens.index(';', start)]
    assert set(options(args)) <= allowed, (subcommand, args)
  # The pinned stack plus jax[tpu] at exactly the pinned jax, in one resolution.
  install = tokens[tokens.index('install'):]
  assert install[:4] == ['install', '--python', '.venv/bin/python', '-r']
  assert f'jax[tpu]=={pinned("jax")}' in install
  assert 'python3 -m venv' not in remote and 'python3-venv' not in remote  # not the image's 3.10


def test_tpu_run_directory_is_gs_and_flags_exist(tmp_path):
  commands = dry_run(TPU_SCRIPT, ['all', 'status', 'fetch'],
                     **tpu_settings(EXTRA_FLAGS='--config.train.num_steps=10 --stop_at_step=5'))
  remotes = remote_commands(commands)
  main_flags = main_flag_names()
  trains = [args for r in remotes for args in program_args(shell_words(r), 'bltdiff.main')]
  prepares = [args for r in remotes for args in program_args(shell_words(r), 'launch/prepare_run.py')]
  assert len(trains) == 1 and len(prepares) == 1
  (train,), (prepare,) = trains, prepares
  assert '--distributed=auto' in train and '--stop_at_step=5' in train
  assert_bltdiff_flags(train, main_flags)
  # prepare_run.py takes --config, --workdir and the --config.* overrides only.
  assert '--stop_at_step=5' not in prepare and '--config.train.num_steps=10' in prepare
  assert_bltdiff_flags(prepare, {'--config', '--workdir'})
  workdirs = [a.split('=', 1)[1] for a in train + prepare if a.startswith('--workdir=')]
  assert workdirs == ['gs://my-bucket/runs/owt'] * 2
  gs_urls = [a for c in commands for a in c if a.startswith('gs://')]
  assert gs_urls and all(u.startswith('gs://my-bucket/runs/owt/') for u in gs_urls)
  # Every remote command is valid shell.
  for remote in remotes:
    proc = subprocess.run(['bash', '-n', '-c', remote], capture_output=True, text=True)
    assert proc.returncode == 0, (remote, proc.stderr)


def test_tpu_setting_errors():
  for settings, word in ((tpu_settings(BUCKET='gs://my-bucket'), 'BUCKET'),
                         (tpu_settings(ACCELERATOR='v9z-8'), 'RUNTIME'),
                         (dict(BUCKET='my-bucket'), 'PROJECT')):
    proc = run_script(TPU_SCRIPT, ['--dry_run', 'create'], base_env(**settings), check=False)
    assert proc.returncode != 0 and word in proc.stderr, (settings, proc.stderr)
  proc = run_script(TPU_SCRIPT, ['--dry_run', 'nonsense'], base_env(**tpu_settings()), check=False)
  assert proc.returncode == 2 and 'unknown step' in proc.stderr


# ---- GPU nodes -----------------------------------------------------------------
def sbatch_directives(path) -> list[str]:
  """#SBATCH lines, which sbatch reads only before the first command of the script."""
  directives = []
  for line in open(path):
    if line.startswith('#SBATCH'):
      directives.append(line.split()[1])
    elif line.strip() and not line.startswith('#'):
      break
  return directives


def test_sbatch_directives_documented_and_one_task_per_node():
  directives = sbatch_directives(GPU_SCRIPT)
  assert directives, 'no #SBATCH line before the first command'
  assert all(d.split('=')[0] in SBATCH_FLAGS for d in directives), directives
  assert '--ntasks-per-node=1' in directives
  after = open(GPU_SCRIPT).read().split('set -euo pipefail', 1)[1]
  assert '#SBATCH' not in after  # would be ignored by sbatch


def test_gpu_dry_run_uses_documented_slurm_flags():
  commands = dry_run(GPU_SCRIPT, ['submit', 'slurm'],
                     **gpu_settings(SLURM_CPUS_PER_TASK='16',
                                    EXTRA_FLAGS='--config.mesh.fsdp=8 --stop_at_step=3'))
  kinds = [c[0] for c in commands]
  assert kinds.count('sbatch') == 1 and kinds.count('srun') == 2
  for argv in commands:
    if argv[0] in ('sbatch', 'srun'):
      allowed = SBATCH_FLAGS if argv[0] == 'sbatch' else SRUN_FLAGS
      program = next(i for i, a in enumerate(argv[1:], 1) if not a.startswith('-'))
      for flag in options(argv[1:program]):
        assert flag in allowed, f'{argv[0]} {flag}'
  main_flags = main_flag_names()
  prepare_step, train_step = [c for c in commands if c[0] == 'srun']
  # 1. the preparation: one task on one node, prepare_run.py with the config overrides only.
  assert '--nodes=1' in prepare_step and '--ntasks=1' in prepare_step
  (prepare,) = program_args(prepare_step, 'launch/prepare_run.py')
  assert_bltdiff_flags(prepare, {'--config', '--workdir'})
  assert '--stop_at_step=3' not in prepare
  # 2. training: one task per node, each owning ALL the node's GPUs (JAX's SLURM
  # default would be one GPU per task).
  assert '--ntasks-per-node=1' in train_step and '--nodes=2' in train_step
  assert '--cpus-per-task=16' in train_step  # srun does not inherit it from sbatch
  (train,) = program_args(train_step, 'bltdiff.main')
  assert '--distributed=auto' in train
  assert '--local_device_ids=' + ','.join(str(i) for i in range(8)) in train
  assert '--config.mesh.fsdp=8' in train and '--stop_at_step=3' in train
  assert_bltdiff_flags(train, main_flags)


def test_gpu_submit_creates_logs_and_runs_in_the_checkout(tmp_path):
  logs = tmp_path / 'logs'
  commands = dry_run(GPU_SCRIPT, ['submit'], **gpu_settings(LOG_DIR=str(logs), NUM_NODES='4',
                                                            GPUS_PER_NODE='4'))
  mkdir, sbatch = commands
  assert mkdir == ['mkdir', '-p', str(logs)]
  assert f'--output={logs}/%x_%j.log' in sbatch
  assert f'--chdir={REPO}' in sbatch and '--nodes=4' in sbatch and '--gpus-per-node=4' in sbatch
  assert '--ntasks-per-node=1' in sbatch
  assert sbatch[-2:] == [os.path.join(REPO, 'launch', 'gpu_multinode.sh'), 'slurm']


def test_gpu_under_sbatch_finds_the_checkout(tmp_path):
  # sbatch runs a copy of the script from its spool directory: the script's own
  # path says nothing about the checkout; SLURM_SUBMIT_DIR does.
  spool = tmp_path / 'spool' / 'job42'
  spool.mkdir(parents=True)
  copy = spool / 'slurm_script'
  shutil.copy(GPU_SCRIPT, copy)
  job = dict(SLURM_JOB_ID='42', SLURM_JOB_NUM_NODES='3', SLURM_GPUS_ON_NODE='4',
             SLURM_CPUS_PER_TASK='8')
  env = base_env(SLURM_SUBMIT_DIR=REPO, **job)
  proc = run_script(str(copy), ['--dry_run', 'slurm'], env, cwd=str(tmp_path))
  train = shlex.split(proc.stdout.splitlines()[-1])
  assert train[0] == 'srun' and f'--chdir={REPO}' in train and '--nodes=3' in train
  assert f'{REPO}/.venv/bin/python' in train and '--local_device_ids=0,1,2,3' in train
  assert shlex.split(proc.stdout.splitlines()[0]) == ['mkdir', '-p', f'{REPO}/logs']
  # Without SLURM_SUBMIT_DIR (or REPO) the spool copy is no checkout: a clear error.
  proc = run_script(str(copy), ['--dry_run', 'slurm'], base_env(**job), check=False,
                    cwd=str(tmp_path))
  assert proc.returncode != 0 and 'not a bltdiff checkout' in proc.stderr
  # Outside a job, `slurm` refuses to start and points to `submit`.
  proc = run_script(GPU_SCRIPT, ['slurm'], base_env(**gpu_settings()), check=False)
  assert proc.returncode != 0 and 'submit' in proc.stderr


def test_gpu_install_and_ssh_modes(tmp_path):
  install = dry_run(GPU_SCRIPT, ['install'], **gpu_settings(UV='/opt/uv'))
  assert install[0] == ['/opt/uv', 'venv', '--clear', '--python', '3.11', f'{REPO}/.venv']
  assert f'jax[cuda12]=={pinned("jax")}' in install[1]
  assert install[1][:5] == ['/opt/uv', 'pip', 'install', '--python', f'{REPO}/.venv/bin/python']
  # One node, explicit coordinates, all its GPUs.
  (node,) = dry_run(GPU_SCRIPT, ['ssh'], **gpu_settings(COORDINATOR='node0:8476', NODE_RANK='1',
                                                       GPUS_PER_NODE='2'))
  (args,) = program_args(node, 'bltdiff.main')
  for flag in ('--distributed=explicit', '--coordinator_address=node0:8476', '--num_processes=2',
               '--process_id=1', '--local_device_ids=0,1'):
    assert flag in args
  assert_bltdiff_flags(args, main_flag_names())
  # ssh_all: one ssh per host; the remote command carries the settings intact.
  extra = "--config.data.paths='a b/*.txt' --stop_at_step=7"
  commands = dry_run(GPU_SCRIPT, ['ssh_all'], **gpu_settings(HOSTS='gpu-a gpu-b', PORT='9999',
                                                             LOG_DIR=str(tmp_path),
                                                             EXTRA_FLAGS=extra))
  assert commands[0] == ['mkdir', '-p', str(tmp_path)]
  for rank, (argv, host) in enumerate(zip(commands[1:], ['gpu-a', 'gpu-b'])):
    assert argv[:2] == ['ssh', host]
    remote = shlex.split(argv[2])
    env = dict(t.split('=', 1) for t in remote if re.match(r'^[A-Z_]+=', t))
    assert env['COORDINATOR'] == 'gpu-a:9999' and env['NODE_RANK'] == str(rank)
    assert env['NUM_NODES'] == '2' and env['EXTRA_FLAGS'] == extra
    assert remote[:2] == ['cd', REPO] and remote[-3:] == ['bash', 'launch/gpu_multinode.sh', 'ssh']


# ---- a dry run prints what a real run executes -------------------------------
def make_stubs(directory):
  """Programs that only append their argv (as JSON) to $STUB_LOG."""
  directory.mkdir()
  for name in ('gcloud', 'tar', 'mkdir', 'sbatch', 'srun', 'ssh', 'uv', 'python'):
    path = directory / name
    path.write_text(f'#!{sys.executable}\nimport json, os, sys\n'
                    'with open(os.environ["STUB_LOG"], "a") as f:\n'
                    '  f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")\n')
    path.chmod(0o755)
  return directory


def recorded(log):
  return [json.loads(line) for line in open(log)] if os.path.exists(log) else []


def normalized(commands):
  return [[os.path.basename(c[0])] + c[1:] for c in commands]


@pytest.mark.parametrize('script, steps, settings', [
    (TPU_SCRIPT, ['all', 'status', 'fetch', 'delete'], tpu_settings(SPOT='1')),
    (GPU_SCRIPT, ['install', 'prepare', 'submit', 'ssh_all'], gpu_settings(HOSTS='a b')),
    (GPU_SCRIPT, ['slurm'], gpu_settings(SLURM_JOB_ID='7', SLURM_CPUS_PER_TASK='4')),
])
def test_dry_run_prints_what_runs(tmp_path, script, steps, settings):
  stubs = make_stubs(tmp_path / 'bin')
  log = tmp_path / 'calls.jsonl'
  settings = dict(settings, PATH=f'{stubs}:{os.environ["PATH"]}', STUB_LOG=str(log),
                  LOG_DIR=str(tmp_path), UV=str(stubs / 'uv'), PYTHON=str(stubs / 'python'))
  env = base_env(**settings)
  printed = [shlex.split(l) for l in run_script(script, ['--dry_run', *steps], env).stdout.splitlines()]
  assert not recorded(log), 'a dry run executed something'
  run_script(script, steps, env)
  # Sorted: ssh_all starts its ssh commands in the background, in any order.
  assert sorted(map(json.dumps, normalized(recorded(log)))) == sorted(
      map(json.dumps, normalized(printed)))


# ---- launch/prepare_run.py -------------------------------------------------------
def test_prepare_run_prepares_the_configs_data(tmp_path):
  workdir = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  proc = subprocess.run([sys.executable, 'launch/prepare_run.py', '--config=configs/byte_mdlm_demo.py',
                         f'--workdir={workdir}', '--config.data.builtin_max_bytes=200000',
                         '--config.data.validation_fraction=0.25'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'prepared: {workdir}/data' in proc.stdout
  manifest = json.loads((workdir / 'data' / 'manifest.json').read_text())
  assert manifest and list((workdir / 'data').glob('*.arrayrecord'))
  # A bad override stops with one line naming the field, as bltdiff.main does.
  proc = subprocess.run([sys.executable, 'launch/prepare_run.py', '--config=configs/byte_mdlm_demo.py',
                         f'--workdir={workdir}', '--config.model.kind=nonsense'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and 'model.kind' in proc.stderr.strip().splitlines()[-1]


# ---- gcloud's own parser -----------------------------------------------------------
@pytest.mark.skipif(shutil.which('gcloud') is None, reason='the Google Cloud CLI is not installed')
def test_gcloud_parser_accepts_the_commands(tmp_path):
  commands = dry_run(TPU_SCRIPT, ['all', 'status', 'fetch', 'delete'], **tpu_settings(SPOT='1'))
  env = base_env(CLOUDSDK_CONFIG=str(tmp_path / 'gcloud'), CLOUDSDK_CORE_CHECK_GCE_METADATA='false',
                 CLOUDSDK_CORE_DISABLE_PROMPTS='1', CLOUDSDK_CORE_DISABLE_USAGE_REPORTING='true',
                 CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK='true')
  seen = set()
  for argv in commands:
    if argv[0] != 'gcloud':
      continue
    shape = (gcloud_subcommand(argv), tuple(options(argv)))
    if shape in seen:
      continue
    seen.add(shape)
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    # A usage error exits 2 ("unrecognized arguments", "argument --x: ..."); with
    # no credentials a well-formed command fails later, with 1.
    assert proc.returncode == 1, (argv[:5], proc.returncode, proc.stderr[-500:])
    assert 'unrecognized arguments' not in proc.stderr and 'argument --' not in proc.stderr


# ---- the pins resolve for the TPU (network, opt-in) ----------------------------------
@pytest.mark.skipif(os.environ.get('BLTDIFF_NETWORK_TESTS') != '1',
                    reason='asks PyPI; set BLTDIFF_NETWORK_TESTS=1')
def test_jax_tpu_pin_resolves_on_python_311_only(tmp_path):
  platforms = [f'--platform=manylinux_2_{v}_x86_64' for v in (17, 27, 28, 31, 35)]

  def resolve(python):
    report = tmp_path / f'report{python}.json'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet',
                           '--only-binary=:all:', *platforms, f'--python-version={python}',
                           f'--target={tmp_path / "t"}', f'--report={report}',
                           f'jax[tpu]=={pinned("jax")}'], capture_output=True, text=True, timeout=600)
    return proc, report

  proc, report = resolve('3.11')
  assert proc.returncode == 0, proc.stderr[-2000:]
  names = {i['metadata']['name'].lower() for i in json.loads(report.read_text())['install']}
  assert {'jax', 'jaxlib', 'libtpu'} <= names
  proc, _ = resolve('3.10')
  assert proc.returncode != 0 and 'requires a different Python' in proc.stderr, proc.stderr[-2000:]

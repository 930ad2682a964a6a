#!/usr/bin/env bash
# Train bltdiff on several GPU nodes: ONE JAX PROCESS PER NODE, owning all of
# that node's GPUs (jax.local_devices() = the node's GPUs, jax.devices() = all
# GPUs of the job), as on TPU pods (one process per host).
#
# Usage, from the repository root (the checkout must be at the same path on
# every node, e.g. on the shared filesystem):
#   bash launch/gpu_multinode.sh install     # once: .venv (uv, Python 3.11) + pinned stack + jax[cuda12]
#   A) SLURM, on the login node (creates logs/, then sbatch):
#      NUM_NODES=2 GPUS_PER_NODE=8 CONFIG=configs/owt.py WORKDIR=/shared/runs/owt \
#        bash launch/gpu_multinode.sh submit
#   B) plain ssh (no scheduler), from one machine that reaches all nodes:
#      HOSTS="gpu-a gpu-b" GPUS_PER_NODE=8 WORKDIR=/shared/runs/owt bash launch/gpu_multinode.sh ssh_all
#   Steps: install | prepare | submit | slurm (inside the job) | ssh (one node) | ssh_all
#   --dry_run (or DRY_RUN=1): print the sbatch / srun / ssh / python commands, run none.
#
# Why one process per node, and --local_device_ids: with --distributed=auto,
# jax.distributed.initialize() reads SLURM's variables (coordinator = first
# node of the step, process id = SLURM_PROCID, count = SLURM_NTASKS) and, on
# GPUs, defaults to ONE device per process (local_device_ids=[SLURM_LOCALID])
# unless local_device_ids is given
# (https://docs.jax.dev/en/latest/_autosummary/jax.distributed.initialize.html).
# A one-task-per-node job would then drive one GPU per node. So every task
# here passes --local_device_ids=0,...,GPUS_PER_NODE-1 (the node's GPUs as the
# task sees them: Slurm gives a job step all the GPUs the job holds on its
# nodes, https://slurm.schedmd.com/gres.html). The ssh mode passes them too, in
# case it runs inside a SLURM allocation (salloc), where JAX would detect SLURM.
# (One process per GPU would be the other consistent choice: --ntasks-per-node=
# GPUS_PER_NODE and no --local_device_ids; this recipe does not do that.)
#
# Storage: WORKDIR must be one directory all nodes write (every process writes
# its shards of each checkpoint; process 0 metrics and samples): a shared
# filesystem (NFS, Lustre) or a gs:// URL used directly, never a gcsfuse mount
# (orbax commits a checkpoint by a rename that gcsfuse refuses on ordinary
# buckets).
#
# sbatch, srun and their options: https://slurm.schedmd.com/sbatch.html,
# https://slurm.schedmd.com/srun.html. The #SBATCH lines below are defaults for
# a plain `sbatch launch/gpu_multinode.sh slurm` from the repository root
# (then `mkdir -p logs` first: Slurm does not create the directory of
# --output); `submit` passes its own values on the command line, which take
# precedence over #SBATCH lines.
#SBATCH --job-name=bltdiff
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x_%j.log
set -euo pipefail

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# ---- command line: steps and --dry_run -------------------------------------
DRY_RUN="${DRY_RUN:-0}"
STEPS=()
for arg in "$@"; do
  case "$arg" in
    --dry_run|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) STEPS+=("$arg") ;;
  esac
done
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(slurm)

die() { echo "error: $*" >&2; exit 1; }

# ---- where the code is ----------------------------------------------------------
# Under sbatch this file runs as a copy in Slurm's spool directory, so its own
# path (BASH_SOURCE) says nothing about the checkout. In order: REPO if set
# (`submit` exports it), the directory sbatch was called from
# (SLURM_SUBMIT_DIR, when it is a checkout), else this file's checkout.
if [[ -z "${REPO:-}" ]]; then
  if [[ -n "${SLURM_SUBMIT_DIR:-}" && -f "${SLURM_SUBMIT_DIR}/bltdiff/main.py" ]]; then
    REPO="$SLURM_SUBMIT_DIR"
  else
    REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  fi
fi
[[ -f "$REPO/bltdiff/main.py" ]] || die "REPO=$REPO is not a bltdiff checkout; set REPO=/path/to/bltdiff"
cd "$REPO"

# ---- settings (override with environment variables) -------------------------
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"  # the venv of `install`, same path on all nodes
CONFIG="${CONFIG:-configs/owt.py}"          # run config
RUN_NAME="${RUN_NAME:-owt}"
WORKDIR="${WORKDIR:-$REPO/runs/$RUN_NAME}"  # shared by all nodes (shared filesystem or gs://)
EXTRA_FLAGS="${EXTRA_FLAGS:-}"              # e.g. "--config.mesh.fsdp=8 --config.model.dtype=bfloat16"
LOG_DIR="${LOG_DIR:-$REPO/logs}"
NUM_NODES="${NUM_NODES:-${SLURM_JOB_NUM_NODES:-2}}"
# GPUs per node: inside a job Slurm sets SLURM_GPUS_ON_NODE (sbatch manual,
# OUTPUT ENVIRONMENT VARIABLES); elsewhere set GPUS_PER_NODE.
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-}}"
CPUS_PER_TASK="${CPUS_PER_TASK:-32}"        # data loading (data.num_workers) and the host side
TIME_LIMIT="${TIME_LIMIT:-24:00:00}"
SKIP_PREPARE="${SKIP_PREPARE:-0}"           # 1: `slurm` trains without the one-node preparation first
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"    # the Python the pinned stack is tested on
UV_VERSION="${UV_VERSION:-0.13.8}"          # pinned uv release
# CUDA build of jax: cuda12 needs an NVIDIA driver >= 525.60.13; use cuda13
# with a driver new enough for CUDA 13 (https://docs.jax.dev/en/latest/installation.html).
JAX_CUDA="${JAX_CUDA:-cuda12}"
JAX_VERSION="$(sed -n 's/^jax==\([^ #]*\).*/\1/p' "$REPO/requirements.txt")"
[[ -n "$JAX_VERSION" ]] || die "requirements.txt pins no jax==VERSION"

# XLA on GPU: let JAX take 90% of GPU memory up front (default 75%).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
# NCCL over InfiniBand/RoCE is picked automatically; set NCCL_SOCKET_IFNAME /
# NCCL_IB_HCA here if your cluster needs a specific interface.

# ---- running or printing commands --------------------------------------------
# run CMD...: execute, or with --dry_run print the command on one line, each
# argument that needs it in single quotes (POSIX shell quoting).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local arg line=""
    for arg in "$@"; do line+="$(quote "$arg") "; done
    echo "${line% }"
  else
    "$@"
  fi
}

# 0,1,...,GPUS_PER_NODE-1: the GPUs one node's process owns.
local_device_ids() {
  local n="$GPUS_PER_NODE"
  if [[ -z "$n" ]] && command -v nvidia-smi >/dev/null; then
    n="$(nvidia-smi --list-gpus | wc -l)"
  fi
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "set GPUS_PER_NODE (GPUs of one node), got '${n}'"
  seq -s, 0 $((n - 1))
}

# EXTRA_FLAGS holds several flags: split on blanks (read -a: no glob expansion).
extra_flags() {
  EXTRA=()
  read -r -a EXTRA <<< "$EXTRA_FLAGS" || true
}
# Flags every bltdiff.main process gets: the config, the shared run directory,
# the user's extras.
main_flags() {
  extra_flags
  MAIN_FLAGS=(--config="$CONFIG" --workdir="$WORKDIR" ${EXTRA[@]+"${EXTRA[@]}"})
}
# launch/prepare_run.py takes the config overrides (--config.*) of EXTRA_FLAGS.
prepare_flags() {
  extra_flags
  PREPARE_FLAGS=(--config="$CONFIG" --workdir="$WORKDIR")
  local flag
  for flag in ${EXTRA[@]+"${EXTRA[@]}"}; do
    [[ "$flag" == --config.* ]] && PREPARE_FLAGS+=("$flag")
  done
  return 0
}

# ---- steps -------------------------------------------------------------------
install() {
  # Once (the venv is on the shared filesystem with the code): uv (pinned),
  # a venv with uv's CPython $PYTHON_VERSION (the cluster's own Python may be
  # older than the >= 3.11 the pins need), then the pinned stack, jax's CUDA
  # build at the pinned jax version, and bltdiff (editable), in one resolution.
  # uv: https://docs.astral.sh/uv/getting-started/installation/
  # The venv's python links to uv's CPython under ~/.local/share/uv/python:
  # HOME must be shared by the nodes too (or set UV_PYTHON_INSTALL_DIR to a
  # shared directory before `install`).
  local uv="${UV:-}"
  if [[ -z "$uv" ]]; then
    uv="$(command -v uv || true)"
  fi
  if [[ -z "$uv" ]]; then
    uv="$HOME/.local/bin/uv"
    run sh -c "curl -LsSf https://astral.sh/uv/$UV_VERSION/install.sh | env UV_UNMANAGED_INSTALL=$HOME/.local/bin sh"
  fi
  run "$uv" venv --clear --python "$PYTHON_VERSION" "$REPO/.venv"
  run "$uv" pip install --python "$REPO/.venv/bin/python" -r "$REPO/requirements.txt" \
    "jax[$JAX_CUDA]==$JAX_VERSION" -e "$REPO"
}

prepare() {
  # The run's inputs, once, in one process (this node's GPUs): shards, and for
  # the latent MDLM the entropy model, entropies and threshold calibration.
  prepare_flags
  run "$PYTHON" "$REPO/launch/prepare_run.py" "${PREPARE_FLAGS[@]}"
}

submit() {
  # On the login node: the logs directory (Slurm opens --output before the
  # script runs and does not create directories), then the job. --chdir: the
  # job runs in the checkout; the settings travel in the environment (sbatch's
  # default --export=ALL), REPO among them, since the script itself runs from
  # Slurm's spool directory.
  local gpus="${GPUS_PER_NODE:-8}"
  export REPO PYTHON CONFIG RUN_NAME WORKDIR EXTRA_FLAGS LOG_DIR SKIP_PREPARE XLA_PYTHON_CLIENT_MEM_FRACTION
  export GPUS_PER_NODE="$gpus"
  run mkdir -p "$LOG_DIR"
  run sbatch --job-name=bltdiff --nodes="$NUM_NODES" --ntasks-per-node=1 --gpus-per-node="$gpus" \
    --cpus-per-task="$CPUS_PER_TASK" --time="$TIME_LIMIT" --chdir="$REPO" \
    --output="$LOG_DIR/%x_%j.log" "$REPO/launch/gpu_multinode.sh" slurm
}

slurm() {
  # Inside the job (the batch script runs on the first node). Two job steps:
  #  1. unless SKIP_PREPARE=1: the preparation, one task on one node (skips
  #     whatever is already done, so a resubmitted job passes quickly);
  #  2. training: one task per node (--ntasks-per-node=1), each
  #     `bltdiff.main --distributed=auto --local_device_ids=<all the node's GPUs>`.
  # --cpus-per-task is passed to srun explicitly: since Slurm 22.05 srun does
  # not take it from sbatch's option. --kill-on-bad-exit=1: if one process
  # dies the others are stopped instead of waiting in a collective forever.
  # Per-node logs: LOG_DIR/<job name>_<job id>_node<n>.log (srun's %x %j %n).
  # Rerunning the job resumes from the latest checkpoint in WORKDIR.
  if [[ "$DRY_RUN" != 1 ]]; then
    : "${SLURM_JOB_ID:?slurm runs inside a Slurm job; from the login node use: bash launch/gpu_multinode.sh submit}"
  fi
  local ids nodes="${SLURM_JOB_NUM_NODES:-$NUM_NODES}"
  ids="$(local_device_ids)"
  local cpus=()
  [[ -n "${SLURM_CPUS_PER_TASK:-}" ]] && cpus=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
  run mkdir -p "$LOG_DIR"
  if [[ "$SKIP_PREPARE" != 1 ]]; then
    prepare_flags
    run srun --nodes=1 --ntasks=1 ${cpus[@]+"${cpus[@]}"} --kill-on-bad-exit=1 --chdir="$REPO" \
      --output="$LOG_DIR/%x_%j_prepare.log" \
      "$PYTHON" "$REPO/launch/prepare_run.py" "${PREPARE_FLAGS[@]}"
  fi
  main_flags
  run srun --nodes="$nodes" --ntasks-per-node=1 ${cpus[@]+"${cpus[@]}"} --kill-on-bad-exit=1 --chdir="$REPO" \
    --output="$LOG_DIR/%x_%j_node%n.log" \
    "$PYTHON" -m bltdiff.main --distributed=auto --local_device_ids="$ids" "${MAIN_FLAGS[@]}"
}

ssh() {
  # One node, explicit coordinates (no scheduler):
  #   --coordinator_address  host:port of process 0 (node 0), reachable from all nodes
  #   --num_processes        how many processes (= nodes) take part
  #   --process_id           this node's rank, 0 on the coordinator node
  #   --local_device_ids     all GPUs of this node (see the top of this file)
  : "${COORDINATOR:?set COORDINATOR=host:port of node 0}" "${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1)}"
  local ids
  ids="$(local_device_ids)"
  main_flags
  run "$PYTHON" -m bltdiff.main --distributed=explicit --coordinator_address="$COORDINATOR" \
    --num_processes="$NUM_NODES" --process_id="$NODE_RANK" --local_device_ids="$ids" "${MAIN_FLAGS[@]}"
}

ssh_all() {
  # From one machine: `ssh` mode on every host of HOSTS in the background, the
  # first host being the coordinator; one log per host in LOG_DIR. The remote
  # command carries the settings as shell-quoted assignments.
  local hosts
  read -r -a hosts <<< "${HOSTS:?set HOSTS=\"host0 host1 ...\" (host0 = coordinator)}"
  local port="${PORT:-8476}" n=${#hosts[@]} i remote
  run mkdir -p "$LOG_DIR"
  for i in "${!hosts[@]}"; do
    remote="cd $(quote "$REPO") && COORDINATOR=$(quote "${hosts[0]}:$port") NUM_NODES=$n NODE_RANK=$i"
    remote+=" GPUS_PER_NODE=$(quote "$GPUS_PER_NODE") PYTHON=$(quote "$PYTHON") CONFIG=$(quote "$CONFIG")"
    remote+=" WORKDIR=$(quote "$WORKDIR") EXTRA_FLAGS=$(quote "$EXTRA_FLAGS") bash launch/gpu_multinode.sh ssh"
    if [[ "$DRY_RUN" == 1 ]]; then
      run ssh "${hosts[$i]}" "$remote"   # run only prints here: our own ssh() is not called
    else
      command ssh "${hosts[$i]}" "$remote" > "$LOG_DIR/node_$i.log" 2>&1 &
    fi
  done
  [[ "$DRY_RUN" == 1 ]] || wait
}

for step in "${STEPS[@]}"; do
  case "$step" in
    install|prepare|submit|slurm|ssh|ssh_all) "$step" ;;
    *) echo "unknown step: $step" >&2; usage >&2; exit 2 ;;
  esac
done

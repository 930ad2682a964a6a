#!/usr/bin/env bash
# Train bltdiff on a Cloud TPU VM slice (one host or many), end to end:
#   create the slice -> copy the code -> install -> check -> prepare data once ->
#   train on every worker at once -> status / fetch results -> delete the slice.
#
# Usage (from the repository root, on a workstation with gcloud installed and
# `gcloud auth login` done):
#   export PROJECT=my-gcp-project ZONE=us-central2-b TPU_NAME=bltdiff-pod \
#          ACCELERATOR=v4-32 BUCKET=my-bucket
#   bash launch/tpu_vm_pod.sh all            # create copy install check prepare train
#   bash launch/tpu_vm_pod.sh STEP [STEP...] # create|copy|install|check|prepare|train|status|fetch|delete
#   bash launch/tpu_vm_pod.sh --dry_run all  # print every command (gcloud, tar, mkdir), run none
#   (DRY_RUN=1 does the same as --dry_run.)
#
# How a pod run works: a slice of N chips has several host VMs ("workers"). The
# same command runs on every worker (`--worker=all`); `python -m bltdiff.main
# --distributed=auto` calls jax.distributed.initialize() with no arguments, and
# on TPU VMs JAX finds the coordinator (worker 0) and this worker's id itself
# (https://docs.jax.dev/en/latest/_autosummary/jax.distributed.initialize.html,
# https://cloud.google.com/tpu/docs/jax-pods). Every process sees all chips in
# jax.devices(); the config's mesh spans them; each process reads its share of
# the documents; process 0 writes metrics and samples; all processes write the
# one sharded checkpoint.
#
# Storage: the run directory is a gs:// URL, used directly (no bucket mount):
# orbax commits a checkpoint by renaming its temporary directory, which a
# gcsfuse mount of an ordinary bucket refuses, and bltdiff reads and writes
# gs:// paths itself. Prerequisites (once): a bucket
# (`gcloud storage buckets create gs://$BUCKET --location=<region of ZONE>`)
# and read/write on it for the TPU VM's service account (default compute
# service account: roles/storage.objectAdmin on the bucket); TPU quota for
# $ACCELERATOR in $ZONE.
#
# Python: the pinned stack (requirements.txt: jax, jaxlib, numpy, flax, orbax,
# grain) needs Python >= 3.11, and the TPU VM images for JAX (tpu-ubuntu2204-base,
# v2-alpha-tpuv5-lite, v2-alpha-tpuv5, v2-alpha-tpuv6e; Ubuntu 22.04) ship
# Python 3.10. So `install` does not use the image's Python: it installs uv
# (https://docs.astral.sh/uv/getting-started/installation/, a pinned version)
# and lets uv create the venv with its own CPython $PYTHON_VERSION (uv downloads
# it: https://docs.astral.sh/uv/concepts/python-versions/). The workers need
# outbound internet for that (the default network has it).
set -euo pipefail

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# ---- command line: steps and --dry_run -------------------------------------
DRY_RUN="${DRY_RUN:-0}"
STEPS=()
for arg in "$@"; do
  case "$arg" in
    --dry_run|--dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; usage >&2; exit 2 ;;
    *) STEPS+=("$arg") ;;
  esac
done
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(all)

die() { echo "error: $*" >&2; exit 1; }

# The repository root: this file is run from a checkout on the workstation
# (never through a scheduler), so its own path finds the root.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# ---- settings (override with environment variables) -------------------------
PROJECT="${PROJECT:?set PROJECT to your GCP project id}"
BUCKET="${BUCKET:?set BUCKET to a GCS bucket name (without gs://)}"
[[ "$BUCKET" != gs://* && "$BUCKET" != */* ]] || die "BUCKET is a bucket name, e.g. my-bucket (not $BUCKET)"
ZONE="${ZONE:-us-central2-b}"          # a zone with quota for ACCELERATOR (v4: us-central2-b)
TPU_NAME="${TPU_NAME:-bltdiff-pod}"    # name of the TPU VM slice
ACCELERATOR="${ACCELERATOR:-v4-32}"    # v4-32 = 16 chips on 4 hosts; v4-8, v5litepod-8, v6e-8: one host

# TPU software version ("runtime") for JAX, per TPU generation, as listed in
# https://cloud.google.com/tpu/docs/runtimes (PyTorch and JAX table).
default_runtime() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default RUNTIME for ACCELERATOR=$1; set RUNTIME (see https://cloud.google.com/tpu/docs/runtimes)" ;;
  esac
}
RUNTIME="${RUNTIME:-$(default_runtime "$ACCELERATOR")}"

CONFIG="${CONFIG:-configs/owt.py}"     # run config (configs/demo.py for a quick check)
RUN_NAME="${RUN_NAME:-owt}"            # the run directory is gs://$BUCKET/runs/$RUN_NAME
WORKDIR="gs://$BUCKET/runs/$RUN_NAME"
EXTRA_FLAGS="${EXTRA_FLAGS:-}"         # e.g. "--config.train.num_steps=20000 --config.mesh.fsdp=4"
SPOT="${SPOT:-}"                       # 1: a Spot slice (may be preempted; rerun `train` to resume)
CHIP_BOUNDS="${CHIP_BOUNDS:-2,2,1}"    # chips of one host as x,y,z (see `prepare`); 2,4,1 for 8-chip hosts
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"  # the Python the pinned stack is tested on
UV_VERSION="${UV_VERSION:-0.13.8}"     # pinned uv release
REMOTE_DIR='~/bltdiff'                 # code location on every worker (~ expands there)

# jax[tpu] at exactly the pinned jax: the extra pulls the matching jaxlib and
# libtpu from PyPI (https://docs.jax.dev/en/latest/installation.html; no
# find-links page is needed for jax 0.10.2, whose libtpu is on PyPI).
JAX_VERSION="$(sed -n 's/^jax==\([^ #]*\).*/\1/p' requirements.txt)"
[[ -n "$JAX_VERSION" ]] || die "requirements.txt pins no jax==VERSION"

# Only the --config.* overrides of EXTRA_FLAGS apply to `prepare` (its other
# flags belong to bltdiff.main).
CONFIG_OVERRIDES=()
for flag in $EXTRA_FLAGS; do
  [[ "$flag" == --config.* ]] && CONFIG_OVERRIDES+=("$flag")
done

# ---- running or printing commands --------------------------------------------
# run CMD...: execute, or with --dry_run print the command on one line,
# each argument that needs it in single quotes (POSIX shell quoting, so the
# printed line can be pasted into a shell and splits back into the same
# arguments).
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

# The gcloud commands and flags below are those of the Cloud SDK reference:
#   https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/create
#   https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/ssh
#   https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/scp
#   https://cloud.google.com/sdk/gcloud/reference/compute/tpus/tpu-vm/delete
#   https://cloud.google.com/sdk/gcloud/reference/storage/cp
#   https://cloud.google.com/sdk/gcloud/reference/storage/cat
# --worker=all runs the command on every host of the slice at once.
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
    --worker=all --command="$1"
}
ssh_one() {  # worker 0 only
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
    --worker=0 --command="$1"
}

# ---- steps -------------------------------------------------------------------
create() {
  # --accelerator-type: the slice; --version: the TPU software version;
  # --spot: cheaper, may be preempted (training resumes from the last checkpoint).
  run gcloud compute tpus tpu-vm create "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME" ${SPOT:+--spot}
}

copy() {
  # The working tree (without the local venv, runs/ and git) to every worker.
  # The old tree is removed there except .venv and logs, so that a code update
  # does not force a reinstall.
  local tarball="${TMPDIR:-/tmp}/bltdiff_src_${TPU_NAME}.tgz"
  run tar czf "$tarball" --exclude=./.venv --exclude=./runs --exclude=./.git \
    --exclude=__pycache__ -C "$REPO" .
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:/tmp/bltdiff_src.tgz" \
    --project="$PROJECT" --zone="$ZONE" --worker=all
  ssh_all "mkdir -p $REMOTE_DIR && find $REMOTE_DIR -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {} + && tar xzf /tmp/bltdiff_src.tgz -C $REMOTE_DIR"
}

install() {
  # On every worker: uv (pinned), a venv with uv's own CPython $PYTHON_VERSION
  # (--clear: a rerun replaces it), then the pinned stack, jax[tpu] at the
  # pinned jax and bltdiff itself (editable), in one resolution. The last
  # command prints the versions without touching the chips.
  ssh_all "set -euo pipefail; cd $REMOTE_DIR; curl -LsSf https://astral.sh/uv/$UV_VERSION/install.sh | env UV_UNMANAGED_INSTALL=\$HOME/.local/bin sh; \$HOME/.local/bin/uv venv --clear --python $PYTHON_VERSION .venv; \$HOME/.local/bin/uv pip install --python .venv/bin/python -r requirements.txt 'jax[tpu]==$JAX_VERSION' -e .; .venv/bin/python -c 'import sys, jax, importlib.metadata as m; print(sys.version.split()[0], jax.__version__, m.version(\"libtpu\"))'"
}

check() {
  # All workers at once, as a pod program runs: every process must report the
  # slice's total chip count and its own host's share.
  ssh_all "cd $REMOTE_DIR && .venv/bin/python -c 'import jax; jax.distributed.initialize(); print(jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].device_kind)'"
}

prepare() {
  # Data preparation runs ONCE, on worker 0 alone, into the gs:// run
  # directory: the trainer's own preparation (launch/prepare_run.py ->
  # bltdiff.data_chain.prepare_run_data): shards of the config's data, and for the latent
  # MDLM (configs/owt.py) also the entropy model (trained on worker 0's chips),
  # the entropies and the threshold calibration. `train` then finds all of it
  # in place. (Skipping this step works too: then all workers run the chain
  # together at start-up, the entropy model on every chip and each host
  # scoring its own share of the shards, which is faster for a long entropy
  # scoring such as OpenWebText's; see launch/README.md, Data.)
  #
  # On a multi-host slice a JAX process on one worker waits for the other
  # hosts; the TPU_* variables make worker 0's process a single-host job on
  # its own chips (CHIP_BOUNDS: the host's chip grid, 2,2,1 for 4-chip hosts,
  # 2,4,1 for 8-chip v5e/v6e hosts). On a single-host slice they change nothing.
  local x y z chips overrides=""
  IFS=, read -r x y z <<< "$CHIP_BOUNDS"
  chips="$(seq -s, 0 $((x * y * z - 1)))"
  [[ ${#CONFIG_OVERRIDES[@]} -gt 0 ]] && overrides=" ${CONFIG_OVERRIDES[*]}"
  ssh_one "cd $REMOTE_DIR && TPU_CHIPS_PER_PROCESS_BOUNDS=$CHIP_BOUNDS TPU_PROCESS_BOUNDS=1,1,1 TPU_VISIBLE_CHIPS=$chips TPU_VISIBLE_DEVICES=$chips TPU_MESH_CONTROLLER_ADDRESS=localhost:8476 TPU_MESH_CONTROLLER_PORT=8476 .venv/bin/python launch/prepare_run.py --config=$CONFIG --workdir=$WORKDIR$overrides"
}

train() {
  # On every worker at once:
  #   --distributed=auto  jax.distributed.initialize() finds the slice itself
  #   --config            the run config; --config.<field>=... overrides a field
  #   --workdir           the gs:// run directory: checkpoints, metrics, samples
  # Rerunning resumes from the latest checkpoint (e.g. after a Spot
  # preemption). nohup and a log per worker keep it running if ssh drops.
  ssh_all "cd $REMOTE_DIR && mkdir -p logs && (TF_CPP_MIN_LOG_LEVEL=1 nohup .venv/bin/python -m bltdiff.main --distributed=auto --config=$CONFIG --workdir=$WORKDIR $EXTRA_FLAGS > logs/train_\$(hostname).log 2>&1 &) && echo started on \$(hostname)"
  [[ "$DRY_RUN" == 1 ]] || echo "follow with:  bash launch/tpu_vm_pod.sh status"
}

status() {
  # Worker 0's log (process 0 logs the metrics), then the end of metrics.jsonl
  # in the bucket (--range=-N: its last N bytes).
  # TensorBoard: tensorboard --logdir=$WORKDIR
  ssh_one "tail -n 20 $REMOTE_DIR/logs/train_\$(hostname).log"
  run gcloud storage cat --range=-2000 "$WORKDIR/metrics.jsonl" --project="$PROJECT"
}

fetch() {
  # Metrics, samples and the config from the bucket to runs/$RUN_NAME
  # (add $WORKDIR/checkpoints for the weights).
  run mkdir -p "runs/$RUN_NAME"
  run gcloud storage cp --recursive "$WORKDIR/config.json" "$WORKDIR/metrics.jsonl" \
    "$WORKDIR/samples" "runs/$RUN_NAME/" --project="$PROJECT"
}

delete() {
  # TPU VMs bill while they exist, running or not.
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --quiet
}

all() { create; copy; install; check; prepare; train; }

for step in "${STEPS[@]}"; do
  case "$step" in
    create|copy|install|check|prepare|train|status|fetch|delete|all) "$step" ;;
    *) echo "unknown step: $step" >&2; usage >&2; exit 2 ;;
  esac
done

#!/usr/bin/env bash
# Train bltdiff on a Cloud TPU VM pod slice (multi-host), end to end:
#   create the slice -> copy the code -> install -> prepare data once -> train on
#   every worker at once -> fetch results -> delete the slice.
#
# Usage (from the repository root, on your workstation with gcloud installed):
#   export PROJECT=my-gcp-project ZONE=us-central2-b TPU_NAME=bltdiff-pod \
#          ACCELERATOR=v4-32 RUNTIME=tpu-ubuntu2204-base BUCKET=my-bucket
#   bash launch/tpu_vm_pod.sh all          # every step below in order
#   bash launch/tpu_vm_pod.sh create|copy|install|mount|prepare|train|status|fetch|delete
#
# How a pod run works: a slice of N chips is N/4 (v4, v5p) or N/4..N/8 (v5e, v6e)
# host VMs ("workers"). The same command runs on every worker (--worker=all);
# `python -m bltdiff.main --distributed=auto` calls jax.distributed.initialize(),
# which on TPU VMs finds the coordinator (worker 0) and this worker's id from the
# TPU metadata server, so no address or ids are passed. Every process then sees
# all chips in jax.devices(); the mesh in the config (mesh.data=-1 by default)
# spans them; each process reads its own share of the documents; process 0
# writes metrics and samples; all processes write the one sharded checkpoint.
#
# Shared storage: checkpoints must be written by all workers to one place and the
# prepared data read by all. This recipe mounts a GCS bucket with gcsfuse at
# $MOUNT on every worker and keeps both there.
#
# Prerequisites (once): `gcloud auth login`; TPU quota for $ACCELERATOR in $ZONE;
# a bucket: `gcloud storage buckets create gs://$BUCKET --location=<region of ZONE>`;
# the TPU VM's service account needs read/write on the bucket (default compute
# service account: grant roles/storage.objectAdmin on the bucket).
set -euo pipefail

# ---- settings (override with environment variables) -------------------------
PROJECT="${PROJECT:?set PROJECT to your GCP project id}"
ZONE="${ZONE:-us-central2-b}"          # a zone with quota for ACCELERATOR (v4: us-central2-b)
TPU_NAME="${TPU_NAME:-bltdiff-pod}"    # name of the TPU VM slice
ACCELERATOR="${ACCELERATOR:-v4-32}"    # slice type: v4-32 = 16 chips, 4 hosts; v4-8 = 1 host
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"  # TPU VM image (v5e: v2-alpha-tpuv5-lite; v6e: v2-alpha-tpuv6e)
BUCKET="${BUCKET:?set BUCKET to a GCS bucket name (no gs://)}"
MOUNT="${MOUNT:-/mnt/bltdiff}"         # where every worker mounts the bucket
CONFIG="${CONFIG:-configs/owt.py}"     # run config (configs/demo.py for a quick check)
RUN_NAME="${RUN_NAME:-owt}"            # runs/<RUN_NAME> in the bucket
EXTRA_FLAGS="${EXTRA_FLAGS:-}"         # e.g. "--config.train.num_steps=20000 --config.mesh.fsdp=4"
SPOT="${SPOT:-}"                       # set to 1 for a Spot (preemptible) slice; rerun `train` to resume
REMOTE_DIR='~/bltdiff'                 # code location on every worker
WORKDIR="$MOUNT/runs/$RUN_NAME"
CHIP_BOUNDS="${CHIP_BOUNDS:-2,2,1}"    # chips of one host as x,y,z (see `prepare`); 2,4,1 for 8-chip hosts

# gcloud wrapper: --worker=all runs the command on every host of the slice at once.
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
    --worker=all --command="$1"
}
ssh_one() {  # worker 0 only
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
    --worker=0 --command="$1"
}

create() {
  # --accelerator-type: slice shape; --version: the VM image (runtime);
  # --spot: cheaper, may be preempted (training resumes from the last checkpoint).
  gcloud compute tpus tpu-vm create "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME" ${SPOT:+--spot}
}

copy() {
  # Copies the working tree (without runs/ and the local venv) to every worker.
  # --worker=all: to all hosts; --recurse: a directory.
  local tarball=/tmp/bltdiff_src.tgz
  tar czf "$tarball" --exclude=.venv --exclude=runs --exclude=.git --exclude='__pycache__' .
  gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":/tmp/bltdiff_src.tgz \
    --project="$PROJECT" --zone="$ZONE" --worker=all
  ssh_all "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar xzf /tmp/bltdiff_src.tgz -C $REMOTE_DIR"
}

install() {
  # A venv per worker; the pinned stack, then JAX's TPU build (libtpu) at the same
  # version as the pinned jax, then bltdiff itself (editable).
  ssh_all "cd $REMOTE_DIR && sudo apt-get update -q && sudo apt-get install -yq python3-venv \
    && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
    && .venv/bin/pip install -q -r requirements.txt \
    && .venv/bin/pip install -q \"jax[tpu]==\$(.venv/bin/python -c 'import jax; print(jax.__version__)')\" \
    && .venv/bin/pip install -q -e . \
    && .venv/bin/python -c 'import jax; print(jax.process_count(), jax.device_count(), jax.devices()[0].device_kind)'"
  # (The last line runs on each worker without jax.distributed, so it prints that
  # host's chips only; that is expected.)
}

mount() {
  # gcsfuse on every worker; --implicit-dirs shows directories created by other
  # writers (orbax, other hosts).
  ssh_all "set -e; if ! command -v gcsfuse >/dev/null; then \
      export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s); \
      echo \"deb https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list; \
      curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -; \
      sudo apt-get update -q && sudo apt-get install -yq gcsfuse; fi; \
    sudo mkdir -p $MOUNT && sudo chown \$USER $MOUNT; \
    mountpoint -q $MOUNT || gcsfuse --implicit-dirs $BUCKET $MOUNT"
}

prepare() {
  # Data preparation runs ONCE, on worker 0 alone, into the shared workdir:
  # the trainer's own preparation (train.prepare_run_data) for the config:
  # shards of the config's data source into $WORKDIR/data, and for the latent
  # MDLM (configs/owt.py) also the entropy model ($WORKDIR/entropy_model, trained
  # on worker 0's chips), the entropies and the threshold calibration. The
  # `train` step then finds everything in place. (Skipping this step works too:
  # process 0 prepares at start-up while the others wait at a barrier, but a
  # long preparation with the whole pod idle is waste.)
  #
  # On a multi-host slice, a JAX process on one worker alone waits for the other
  # hosts; the TPU_* variables below make worker 0's process a single-host job
  # on its own chips (CHIP_BOUNDS: the host's chip grid, 2,2,1 for 4 chips on
  # v4/v5p/v5e-4/v6e-4 hosts, 2,4,1 for 8-chip v5e/v6e hosts). On a single-host
  # slice they change nothing.
  local chips
  chips=$(python3 -c "import sys; x,y,z=map(int,'$CHIP_BOUNDS'.split(',')); print(','.join(map(str,range(x*y*z))))")
  ssh_one "cd $REMOTE_DIR && TPU_CHIPS_PER_PROCESS_BOUNDS=$CHIP_BOUNDS TPU_PROCESS_BOUNDS=1,1,1 \
    TPU_VISIBLE_CHIPS=$chips TPU_VISIBLE_DEVICES=$chips \
    TPU_MESH_CONTROLLER_ADDRESS=localhost:8476 TPU_MESH_CONTROLLER_PORT=8476 \
    .venv/bin/python -c \"
import importlib.util
spec = importlib.util.spec_from_file_location('cfg', '$CONFIG')
cfg = importlib.util.module_from_spec(spec); spec.loader.exec_module(cfg)
from bltdiff import train
config, prepared = train.prepare_run_data(cfg.get_config(), '$WORKDIR')
print('prepared:', prepared)
\""
}

train() {
  # On every worker at once. Flags:
  #   --distributed=auto       jax.distributed.initialize() with TPU auto-detection
  #   --config                 the run config; --config.<field>=... overrides any field
  #   --workdir                shared (bucket) directory: checkpoints, metrics, samples
  # Rerunning the same command resumes from the latest checkpoint (e.g. after a
  # Spot preemption). nohup + a log per worker keep it running if ssh drops.
  # TPU_STDERR_LOG_LEVEL / TF_CPP_MIN_LOG_LEVEL only quiet libtpu's start-up log.
  ssh_all "cd $REMOTE_DIR && mkdir -p logs && \
    TF_CPP_MIN_LOG_LEVEL=1 nohup .venv/bin/python -m bltdiff.main --distributed=auto \
      --config=$CONFIG --workdir=$WORKDIR \
      $EXTRA_FLAGS \
      > logs/train_\$(hostname).log 2>&1 &
    echo started on \$(hostname)"
  echo "follow with:  bash launch/tpu_vm_pod.sh status"
}

status() {
  # Worker 0's log holds the metrics (process 0 writes them); the others log
  # their own progress. TensorBoard: tensorboard --logdir=gs://$BUCKET/runs/$RUN_NAME
  ssh_one "tail -n 20 $REMOTE_DIR/logs/train_\$(hostname).log; tail -n 3 $WORKDIR/metrics.jsonl 2>/dev/null || true"
}

fetch() {
  # Results live in the bucket; copy metrics, samples and the config locally
  # (add checkpoints/ if you want the weights).
  mkdir -p "runs/$RUN_NAME"
  gcloud storage cp -r "gs://$BUCKET/runs/$RUN_NAME/config.json" \
    "gs://$BUCKET/runs/$RUN_NAME/metrics.jsonl" "gs://$BUCKET/runs/$RUN_NAME/samples" \
    "runs/$RUN_NAME/" --project="$PROJECT"
  echo "fetched into runs/$RUN_NAME"
}

delete() {
  # TPU VMs bill while they exist, running or not.
  gcloud compute tpus tpu-vm delete "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --quiet
}

all() { create; copy; install; mount; prepare; train; }

"${1:-all}"

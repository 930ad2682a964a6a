#!/usr/bin/env bash
# Train bltdiff on several GPU nodes: one JAX process per node, driving all of
# that node's GPUs (jax.local_devices() = its GPUs; jax.devices() = all of them).
#
# Two ways to start the processes:
#
# A) SLURM (sbatch this file; srun starts one task per node):
#      sbatch --nodes=2 launch/gpu_multinode.sh slurm
#    `--distributed=auto` lets jax.distributed.initialize() read SLURM's
#    environment (SLURM_JOB_NODELIST, SLURM_NTASKS, SLURM_PROCID): the
#    coordinator is the first node of the job, the process id is the task rank.
#
# B) Plain ssh (no scheduler): run this on every node, with the same
#    COORDINATOR (node 0's reachable address and a free port) and NUM_NODES,
#    and NODE_RANK = 0 on the coordinator node, 1..NUM_NODES-1 on the others:
#      COORDINATOR=10.0.0.1:8476 NUM_NODES=2 NODE_RANK=0 bash launch/gpu_multinode.sh ssh   # node 0
#      COORDINATOR=10.0.0.1:8476 NUM_NODES=2 NODE_RANK=1 bash launch/gpu_multinode.sh ssh   # node 1
#    or from one machine:  HOSTS="gpu-a gpu-b" bash launch/gpu_multinode.sh ssh_all
#    which ssh-es into each host (keys set up, same code path on every host)
#    and starts NODE_RANK=i on the i-th host, the first host being the coordinator.
#
# Requirements on every node: the code at the same path ($REPO), a shared
# filesystem for WORKDIR (NFS, Lustre, a mounted bucket: every process writes
# its part of each checkpoint there; process 0 writes metrics and samples),
# and the prepared data in WORKDIR (run `prepare` once first, on one node).
# Install once per node (or on the shared filesystem):
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.txt \
#     && .venv/bin/pip install "jax[cuda12]==0.10.2" && .venv/bin/pip install -e .
#   (use jax[cuda13] with CUDA 13 drivers; keep the version equal to the pinned jax)
#
#SBATCH --job-name=bltdiff
#SBATCH --nodes=2                 # number of nodes = number of JAX processes
#SBATCH --ntasks-per-node=1       # one process per node, owning all its GPUs
#SBATCH --gpus-per-node=8         # GPUs per node (e.g. 8x H100/H200)
#SBATCH --cpus-per-task=32        # data loading (data.num_workers) and the host side
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x_%j_%t.log
set -euo pipefail

REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"  # code, same path on all nodes
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
CONFIG="${CONFIG:-configs/owt.py}"          # run config
WORKDIR="${WORKDIR:-$REPO/runs/owt}"        # on the shared filesystem
PREPARED="${PREPARED:-}"                    # optional: shards prepared elsewhere (data.prepared_dir); empty = WORKDIR/data
EXTRA_FLAGS="${EXTRA_FLAGS:-}"              # e.g. "--config.mesh.fsdp=8 --config.model.dtype=bfloat16"

# XLA on GPU: let JAX take 90% of GPU memory up front (default 75%).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
# NCCL over InfiniBand/RoCE is picked automatically; set NCCL_SOCKET_IFNAME /
# NCCL_IB_HCA here if your cluster needs a specific interface.

common_flags() {
  echo "--config=$CONFIG --workdir=$WORKDIR ${PREPARED:+--config.data.prepared_dir=$PREPARED} $EXTRA_FLAGS"
}

prepare() {
  # Once, on one node, before training: the trainer's own preparation into
  # WORKDIR (shards; for the latent MDLM also the entropy model and threshold).
  cd "$REPO" && "$PYTHON" -c "
import importlib.util
spec = importlib.util.spec_from_file_location('cfg', '$CONFIG')
cfg = importlib.util.module_from_spec(spec); spec.loader.exec_module(cfg)
from bltdiff import train
config, prepared = train.prepare_run_data(cfg.get_config(), '$WORKDIR')
print('prepared:', prepared)
"
}

slurm() {
  # Inside an sbatch allocation: srun starts one task per node; each runs main
  # with --distributed=auto (SLURM detection). Rerunning resumes from the
  # latest checkpoint in WORKDIR.
  mkdir -p "$REPO/logs"
  cd "$REPO"
  srun --ntasks-per-node=1 "$PYTHON" -m bltdiff.main --distributed=auto $(common_flags)
}

ssh() {
  # One node, explicit coordinates:
  #   --coordinator_address  host:port of process 0 (node 0), reachable from all nodes
  #   --num_processes        how many processes (nodes) take part
  #   --process_id           this node's rank, 0 on the coordinator node
  : "${COORDINATOR:?set COORDINATOR=host:port of node 0}" "${NUM_NODES:?set NUM_NODES}" \
    "${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1)}"
  cd "$REPO"
  exec "$PYTHON" -m bltdiff.main --distributed=explicit --coordinator_address="$COORDINATOR" \
    --num_processes="$NUM_NODES" --process_id="$NODE_RANK" $(common_flags)
}

ssh_all() {
  # From a login machine: start `ssh` mode on every host of HOSTS in the background.
  read -r -a hosts <<< "${HOSTS:?set HOSTS=\"host0 host1 ...\" (host0 = coordinator)}"
  local port="${PORT:-8476}" n=${#hosts[@]}
  mkdir -p "$REPO/logs"
  for i in "${!hosts[@]}"; do
    command ssh "${hosts[$i]}" "cd $REPO && COORDINATOR=${hosts[0]}:$port NUM_NODES=$n NODE_RANK=$i \
      CONFIG=$CONFIG WORKDIR=$WORKDIR PREPARED=$PREPARED EXTRA_FLAGS='$EXTRA_FLAGS' \
      bash launch/gpu_multinode.sh ssh" > "$REPO/logs/node_$i.log" 2>&1 &
  done
  wait
}

# One process per GPU instead (e.g. when a node's GPUs are not all visible to
# one process): start NUM_GPUS processes per node with --local_device_ids=<gpu>
# and process ids node_rank*NUM_GPUS + gpu; NUM_PROCESSES = nodes * NUM_GPUS.

"${1:-slurm}"

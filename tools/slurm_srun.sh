#!/usr/bin/env bash
# srun a Python tool with mmdet's Slurm variables: what tools/slurm_train.sh and
# tools/slurm_test.sh share.
#
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] [PYTHON=python] \
#        tools/slurm_srun.sh PARTITION JOB_NAME TOOL.py [tool args]
#
# GPUS           tasks in all (mmdet's name; on a CPU partition: processes) [8]
# GPUS_PER_NODE  GPUs per node: --gres=gpu:N and N tasks per node [8];
#                0 = CPU partition: no --gres, gloo (see psbn_mmdet/dist.py)
# TASKS_PER_NODE --ntasks-per-node [GPUS_PER_NODE; 0 or unset: Slurm decides]
# CPUS_PER_TASK  --cpus-per-task [5]; on a CPU partition also OMP_NUM_THREADS, unless set
# SRUN_ARGS      more srun options, split at spaces (e.g. "--time=60 --exclusive")
set -euo pipefail
if [ "$#" -lt 3 ]; then
    echo "slurm_srun: error: usage: $0 PARTITION JOB_NAME TOOL.py [tool args]" >&2
    exit 2
fi

PARTITION=$1
JOB_NAME=$2
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS_PER_NODE}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}

read -r -a srun_args <<<"$SRUN_ARGS"
resources=(--ntasks="$GPUS" --cpus-per-task="$CPUS_PER_TASK")
if [ "$GPUS_PER_NODE" != 0 ]; then
    resources+=(--gres=gpu:"$GPUS_PER_NODE")
else
    # one task per CPUS_PER_TASK cores: torch would start a thread per core
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_TASK}
fi
if [ -n "$TASKS_PER_NODE" ] && [ "$TASKS_PER_NODE" != 0 ]; then
    resources+=(--ntasks-per-node="$TASKS_PER_NODE")
fi

set -x
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${resources[@]}" \
    --kill-on-bad-exit=1 \
    "${srun_args[@]}" \
    "$PYTHON" -u "${@:3}"

#!/usr/bin/env bash
# Train through Slurm: one task per GPU (or per process on a CPU partition).
#
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] [PYTHON=python] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
#
# The variables (and TASKS_PER_NODE; GPUS_PER_NODE=0 for a CPU partition) are
# described in tools/slurm_srun.sh.
set -euo pipefail
if [ "$#" -lt 4 ]; then
    echo "slurm_train: error: usage: [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5" \
        "SRUN_ARGS=...] $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2
    exit 2
fi
TOOLS=$(cd "$(dirname "$0")" && pwd)
exec bash "$TOOLS/slurm_srun.sh" "$1" "$2" "$TOOLS/train.py" "$3" \
    --work-dir="$4" --launcher=slurm "${@:5}"

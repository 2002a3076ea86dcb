#!/usr/bin/env bash
# Create .venv/ with a CPU torch, mmcv (compiled ops), mmdet and psbn-mmdet.
# Idempotent: a stamp records what was installed; a second run returns at once.
#
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0; on a
# machine without the local CPU wheel use e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu),
# MAX_JOBS (parallel compile jobs for mmcv, default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
MMCV_SPEC=${MMCV_SPEC:-mmcv==2.1.0}
VENV=.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
STAMP="$VENV/.psbn-setup"
want=$(cat pyproject.toml tools/setup_env.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
step() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

[ -x "$VENV/bin/python" ] || { step "creating $VENV"; "$PYTHON" -m venv "$VENV"; }

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    step "installing $TORCH_SPEC (CPU build)"
    $PIP install "$TORCH_SPEC" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
fi
if ! "$VENV/bin/python" -c 'import mmcv.ops' 2>/dev/null; then
    # mmcv 2.1's setup.py needs the pre-70 setuptools API, and torch (in the
    # same environment: mmcv compiles against it) asks for setuptools >= 77.
    # So: build with the old setuptools, then put a current one back.
    # --no-warn-conflicts: pip would call the expected, temporary mismatch an
    # ERROR.  ninja compiles in parallel.
    $PIP install --no-warn-conflicts 'setuptools<70' wheel ninja
    step "installing $MMCV_SPEC with compiled ops (first time on a machine: about 10 min on 2 cores; pip caches the wheel)"
    MAX_JOBS=${MAX_JOBS:-$(nproc)} $PIP install --no-build-isolation "$MMCV_SPEC"
    step "restoring a setuptools that torch accepts (and mmengine, which imports pkg_resources)"
    $PIP install 'setuptools>=77,<81'
fi
step "installing mmdet and psbn-mmdet (editable, with test extras)"
$PIP install 'mmdet==3.3.0'
$PIP install --no-build-isolation -e '.[dev]'
"$VENV/bin/python" -c 'import mmcv.ops, mmdet, psbn_mmdet, torch; print("[setup] ready: torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
echo "$want" > "$STAMP"

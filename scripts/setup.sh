#!/usr/bin/env bash
# Create .venv at the repo root (if missing) and install vrshq with its test and postgres extras.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
# This machine's pip config names local wheel folders that may not exist: drop that noise only.
pip_install() {
    $PIP install --quiet "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
pip_install --upgrade "pip<26.2" setuptools wheel
# torch + torchvision first: the pinned builds (pip takes them from the machine's disk when there).
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "setup: installing torch 2.14.1 + torchvision 0.29.1 (a few minutes)" >&2
    pip_install "torch==2.14.1" "torchvision==0.29.1"
fi
# sam2 1.1.0 is an sdist: build it against the installed torch, without its CUDA extension.
if ! "$VENV/bin/python" -c "import sam2.build_sam" >/dev/null 2>&1; then
    echo "setup: building sam2 1.1.0 (no CUDA extension)" >&2
    SAM2_BUILD_CUDA=0 pip_install --no-build-isolation "sam2==1.1.0"
fi
pip_install -e ".[test,postgres]"
"$VENV/bin/python" -c "import torch, sam2.build_sam, decord, av, psycopg, vrshq.cli" || {
    echo "setup: the environment in $VENV is incomplete" >&2
    exit 1
}

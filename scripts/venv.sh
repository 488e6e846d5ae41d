#!/usr/bin/env bash
# Create (once) and fill the project's virtual environment, then print its python.
# - A machine whose python3 already has torch (a GPU box) gets a venv that sees it
#   (--system-site-packages), so its CUDA build of torch and its Triton are reused.
# - Elsewhere torch==2.13.0 is installed (on the CI/dev machines a local CPU wheel).
# Usage: PY=$(scripts/venv.sh [extra])   extra: "test" installs the test dependencies too.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GEMS_VENV:-.venv}
EXTRA=${1:-}
log() { echo "[venv] $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  if python3 -c "import torch, triton" >/dev/null 2>&1; then
    log "creating $VENV on top of the system torch"
    python3 -m venv --system-site-packages "$VENV" >&2
  else
    log "creating $VENV"
    python3 -m venv "$VENV" >&2
  fi
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  log "installing torch==2.13.0"
  "$PY" -m pip install -q torch==2.13.0 >&2
fi
SPEC="."
[ -n "$EXTRA" ] && SPEC=".[$EXTRA]"
if ! "$PY" -c "import gemsops, triton, yaml" >/dev/null 2>&1 || { [ -n "$EXTRA" ] && ! "$PY" -c "import pytest, xdist" >/dev/null 2>&1; }; then
  log "installing gemsops ($SPEC) in editable mode"
  if ! "$PY" -m pip install -q -e "$SPEC" >&2; then
    # offline machine whose packages are already there: no build isolation, no downloads
    "$PY" -m pip install -q --no-build-isolation --no-deps -e . >&2
  fi
fi
echo "$PY"

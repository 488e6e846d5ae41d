#!/usr/bin/env bash
# Create (once) .venv-vllm: gemsops with its test dependencies, plus vLLM 0.33.0 for the patch
# tests, then print its python. vLLM's wheel pins a CUDA torch; on a CPU machine it goes in with
# --no-deps next to the CPU torch, with the packages its imports need
# (scripts/vllm-cpu-requirements.txt). Its layer classes and Triton backend import without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VERSION=0.33.0
PY=$(GEMS_VENV=.venv-vllm scripts/venv.sh test)
if ! "$PY" -c "import vllm, sys; sys.exit(vllm.__version__.split('+')[0] != '$VLLM_VERSION')" >/dev/null 2>&1; then
  echo "[vllm] installing vllm==$VLLM_VERSION (no deps) and scripts/vllm-cpu-requirements.txt" >&2
  "$PY" -m pip install -q --no-deps -r scripts/vllm-cpu-requirements.txt >&2
  "$PY" -m pip install -q --no-deps "vllm==$VLLM_VERSION" >&2
fi
if ! "$PY" -c "import sys; from importlib.metadata import entry_points as e; sys.exit('gemsops' not in {p.name for p in e(group='vllm.general_plugins')})" >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-deps -e . >&2  # an older editable install lacks the vLLM plugin entry point
fi
echo "$PY"

#!/usr/bin/env bash
# GPU check: the whole test suite on CUDA, then the quick benchmarks and the host-overhead
# table (GPU_CHECK_E2E=1 adds the end-to-end model). Logs under $1. Each part can be
# switched off (GPU_CHECK_TESTS=0, GPU_CHECK_BENCH=0, GPU_CHECK_HOST=0) to fit a time slot;
# GPU_CHECK_PATHS narrows the tests (default: tests).
# Runs with the machine's own python3 (its CUDA torch and Triton); optional peers
# (FlagGems, Liger-Kernel) are taken from .whl/ when present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH} GEMS_VENDOR=nvidia PYTHONUNBUFFERED=1
export GEMS_CACHE_DIR=${GEMS_CACHE_DIR:-$OUT/tune_cache}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
status=0
if [ "${GPU_CHECK_TESTS:-1}" = 1 ]; then
  # tests of several GiB (marked big_memory) run after the others, one at a time with the GPU
  # to themselves: beside workers that each keep GiBs cached, the 2**31-element tests (up to
  # about 45 GiB) ran other tests out of memory
  GEMS_TEST_FAILURES=$OUT/failures.txt timeout ${PYTEST_TIMEOUT:-3000} $PY -m pytest --durations=40 -v -n ${PYTEST_WORKERS:-4} --dist loadgroup -p no:cacheprovider -m "not big_memory" ${GPU_CHECK_PATHS:-tests} ${PYTEST_ARGS:-} > "$OUT/pytest.log" 2>&1 || status=1
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -40
  tail -1 "$OUT/pytest.log"
  GEMS_TEST_FAILURES=$OUT/failures_big.txt timeout ${PYTEST_TIMEOUT:-3000} $PY -m pytest --durations=20 -v -p no:cacheprovider -m big_memory ${GPU_CHECK_PATHS:-tests} ${PYTEST_ARGS:-} > "$OUT/pytest_big.log" 2>&1 \
    || { rc=$?; [ $rc = 5 ] || status=1; }  # 5: no big_memory test under GPU_CHECK_PATHS
  grep -E "^(FAILED|ERROR)" "$OUT/pytest_big.log" | head -40
  tail -1 "$OUT/pytest_big.log"
fi
if [ "${GPU_CHECK_BENCH:-1}" = 1 ] && [ -f benchmark/__main__.py ]; then
  $PY -m benchmark --ops ${BENCH_OPS:-all} --quick --out "$OUT/bench" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1 || status=1
  tail -c 6000 "$OUT/bench.log"
fi
if [ "${GPU_CHECK_HOST:-1}" = 1 ] && [ -f benchmark/__main__.py ]; then
  $PY -m benchmark --host-overhead --out "$OUT/host" > "$OUT/host.log" 2>&1 || status=1
  grep -A20 "## Host overhead" "$OUT/host.log" | head -24
fi
if [ "${GPU_CHECK_E2E:-0}" = 1 ] && [ -f benchmark/__main__.py ]; then
  $PY -m benchmark --e2e --quick --out "$OUT/e2e" > "$OUT/e2e.log" 2>&1 || status=1
  tail -c 3000 "$OUT/e2e.log"
fi
exit $status

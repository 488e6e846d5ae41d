# make demo       run a small Llama-style block with and without gems (CPU: interpreter)
# make test       run the test suite (CPU: every kernel through Triton's interpreter)
# make test-vllm  the vLLM patch tests against vLLM 0.33.0, in .venv-vllm (scripts/vllm_venv.sh)
# make gpu-check  on a GPU machine: test suite on CUDA + quick benchmarks, logs under $(OUT)
# Each target creates/updates .venv first (scripts/venv.sh).
OUT ?= gpu_out
PYTEST_WORKERS ?= 2

.PHONY: demo test test-vllm gpu-check bench

demo:
	@PY=$$(scripts/venv.sh) && $$PY examples/demo.py

test:
	@PY=$$(scripts/venv.sh test) && $$PY -m pytest -n $(PYTEST_WORKERS) -q tests

# GEMS_REQUIRE_VLLM: a vLLM that fails to import is an error here, not a skip
test-vllm:
	@PY=$$(scripts/vllm_venv.sh) && GEMS_REQUIRE_VLLM=1 $$PY -m pytest -q -p no:cacheprovider tests/test_vllm_patches.py

gpu-check:
	@bash scripts/gpu_check.sh $(OUT)

bench:
	@PY=$$(scripts/venv.sh) && PYTHONPATH=. $$PY -m benchmark --ops all --quick

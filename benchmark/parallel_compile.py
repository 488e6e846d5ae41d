"""Compile the candidate configs of Triton's autotuner in parallel before it times them.

Triton's ``Autotuner`` (which FlagGems' ``LibTuner`` extends) times its candidates one
after another, and the first launch of each compiles it: a new key of FlagGems' Hopper
``mm`` compiles every GEMM config of its list that fits in shared memory. In a fresh
quick-suite run on an H100 that was 279 of 506 seconds, most of it in four GEMM cases
(36-42 s each; 2.5 s of that with the kernels already compiled). gems' own tuner
compiles its candidates in a thread pool first (``runtime.tuner._compile_all``: Triton's
compiler releases the GIL in its MLIR passes and in ptxas); :func:`install` gives
Triton's autotuner the same step, so the suite's wall time is not spent waiting on one
core while the others idle.

What the autotuner then times and picks does not change: the same configs are compiled
with the same options, submitted to ``triton.AsyncCompileMode`` as warm-up runs (compiled,
not launched), and the timing loop that follows finds them in the kernel's cache. A
config that fails to compile is skipped here and fails again, as before, when timed.
Only first-call times change, and the report says when this was on. Measured on an H100
(16 cores): FlagGems' ``mm`` 1x4096x4096 first call 34.9 s serial, 10.6 s parallel.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_state: dict = {}


def available() -> bool:
    """True when this Triton has what the parallel step needs (``AsyncCompileMode``)."""
    try:
        import triton
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return False
    return hasattr(triton, "AsyncCompileMode") and hasattr(Autotuner, "prune_configs")


def install() -> bool:
    """Patch ``Autotuner.prune_configs`` to compile the configs it returns in parallel.

    Returns whether the patch is in place (idempotent; False where unavailable).
    """
    if "original" in _state:
        return True
    if not available():
        return False
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.prune_configs

    def prune_configs(self, kwargs, *args, **more):
        configs = original(self, kwargs, *args, **more)
        _compile_all(self, configs, kwargs)
        return configs

    _state["original"] = original
    Autotuner.prune_configs = prune_configs
    return True


def uninstall() -> None:
    """Put Triton's own ``prune_configs`` back."""
    original = _state.pop("original", None)
    if original is not None:
        from triton.runtime.autotuner import Autotuner

        Autotuner.prune_configs = original


def _pool() -> ThreadPoolExecutor:
    pool = _state.get("pool")
    if pool is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:
            workers = os.cpu_count() or 1
        pool = _state["pool"] = ThreadPoolExecutor(max_workers=max(1, min(workers, 16)),
                                                   thread_name_prefix="bench-compile")
    return pool


def _compile_all(tuner, configs, kwargs) -> None:
    import triton

    nargs = getattr(tuner, "nargs", None)
    if not nargs or len(configs) < 2:
        return
    # run() set nargs from the positional arguments, in the kernel's parameter order
    args = [nargs[name] for name in tuner.arg_names if name in nargs]
    try:
        mode = triton.AsyncCompileMode(_pool(), ignore_errors=True)
        with mode:
            for config in configs:
                current = {**kwargs, **config.all_kwargs()}
                try:
                    if config.pre_hook is not None:
                        # what the config specializes on may be set here: FlagGems' Hopper mm
                        # gives its tensor descriptors the config's block shape; the timing
                        # loop runs the hook again before each of its calls
                        config.pre_hook({**nargs, **current})
                    tuner.fn.run(*args, **{**current, "warmup": True, "grid": current.get("grid", (1,))})
                except Exception:  # noqa: BLE001  (it fails again, measurably, when timed)
                    pass
    except Exception:  # noqa: BLE001  (another AsyncCompileMode active, an odd wrapper: compile as timed)
        pass

"""One tuner for every tunable kernel, with a persistent cache on disk.

Candidates come from the vendor YAML (``<kernel>: {default: {...}, candidates: [...]}``).
The winner for (kernel, kernel source hash, bucketed key, device name, Triton version)
is kept in memory and in ``$GEMS_CACHE_DIR`` (default ``~/.cache/gemsops``), one JSON
file per kernel, so later processes start tuned with zero benchmarking. Writers take
an advisory file lock and replace the file atomically, so concurrent processes never
corrupt it. A corrupt file is set aside (renamed ``*.corrupt``) with a warning; an
unwritable directory is a warning and tuning results then live only in memory.

Under the interpreter vendor nothing can be timed, so the YAML ``default`` is used.
On a miss the candidates are first compiled together in a thread pool (``_compile_all``),
then timed one by one, and the close contenders once more in reverse order (``_tune``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable

import torch
import triton

from .registry import NotOnCurrentDevice
from .scope import natively
from .vendor import VENDOR

try:
    import fcntl
except ImportError:  # not on Windows: atomic replace still keeps the file whole
    fcntl = None


def cache_dir() -> Path:
    """Where tuning results live (``GEMS_CACHE_DIR`` or ``~/.cache/gemsops``)."""
    env = os.environ.get("GEMS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "gemsops"


def bucket(n: int) -> int:
    """Round a size up to a power of two so nearby shapes share one tuning result."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


RETIME_WITHIN = 0.10  # candidates this close to the fastest (relative) are timed twice


class Stats:
    benchmarks_run = 0  # configs timed in this process, over all tuners
    disk_hits = 0


stats = Stats()


def can_benchmark() -> bool:
    return VENDOR is not None and not VENDOR.interpreter


def benchmark(fn: Callable[[], None]) -> float:
    """Median milliseconds of ``fn`` on the device.

    On CUDA the calls are replayed from a CUDA graph, so the time is the kernels' own: a
    plain timing loop of a kernel shorter than its host cost (a paged decode at batch 1, a
    small GEMM) measures the Python launch path instead, and the pick becomes noise. A
    call that cannot be captured is timed with ``triton.testing.do_bench``.
    """
    with natively():
        if VENDOR is not None and VENDOR.device_type == "cuda":
            try:
                return _graph_ms(fn)
            except Exception:  # noqa: BLE001  (not capturable: time it the plain way)
                pass
        return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


def benchmark_cold(fn: Callable[[], None]) -> float:
    """Median milliseconds of ``fn`` with the L2 cache cleared before each call.

    For kernels whose inputs a model's forward does not leave in L2 (attention over long
    sequences): replaying one call after another keeps them there, and favours tilings
    that re-read them more often (H100, causal SDPA B4 S2048: 64-row tiles timed 299.7 us
    replayed against 325.6 cold, while 128-row ones timed 308.9 and 315.6).
    """
    with natively():
        return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


class _Tuning(threading.local):
    active = False


_tuning = _Tuning()


def tuning() -> bool:
    """True while this thread times a tuner's candidates (launches must not switch devices)."""
    return _tuning.active


def _current_device_set_to(index: int):
    return torch.cuda.device(index)


def capturing() -> bool:
    """True while the current CUDA stream is being captured into a graph (nothing can be timed)."""
    return VENDOR is not None and VENDOR.device_type == "cuda" and torch.cuda.is_current_stream_capturing()


def _graph_ms(fn: Callable[[], None], target_ms: float = 2.0, reps: int = 7) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # allocations and lazy state outside the capture
        one = _capture(fn, 1)
        one.replay()  # warm
        per_call = _replay_ms(one, stream, 3)
        # replay enough calls per graph that launch gaps and event resolution do not count
        calls = max(1, min(200, int(target_ms / max(per_call, 1e-3))))
        graph = _capture(fn, calls)
        graph.replay()  # warm
        times = sorted(_replay_ms(graph, stream, 1) / calls for _ in range(reps))
    torch.cuda.current_stream().wait_stream(stream)
    return times[len(times) // 2]


def _capture(fn: Callable[[], None], calls: int):
    # CUDAGraph's own capture calls, not ``torch.cuda.graph``: that context synchronizes and
    # empties the allocator's cache on entry, which a tuner must not do to the user's process
    graph = torch.cuda.CUDAGraph()
    graph.capture_begin(capture_error_mode="thread_local")
    try:
        try:
            for _ in range(calls):
                fn()
        finally:
            graph.capture_end()  # raises too when fn broke the capture
    except BaseException:
        _reset_rng_capture_state()
        raise
    return graph


def _reset_rng_capture_state() -> None:
    """A capture that failed leaves the CUDA generator believing it is still capturing (its
    epilogue never ran), and the next ``torch.randn`` would raise. One clean capture of a
    trivial op runs prologue and epilogue and puts it back."""
    torch.cuda.synchronize()
    scratch = torch.zeros(1, device="cuda")
    graph = torch.cuda.CUDAGraph()
    graph.capture_begin(capture_error_mode="thread_local")
    scratch.add_(1)
    graph.capture_end()


def _replay_ms(graph, stream, n: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(stream)
    for _ in range(n):
        graph.replay()
    end.record(stream)
    end.synchronize()
    return start.elapsed_time(end) / n


class DiskCache:
    """One JSON object on disk: entry key -> config dict."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict | None = None
        self.writable = True

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            aside = self.path.with_suffix(self.path.suffix + ".corrupt")
            try:
                os.replace(self.path, aside)
                where = f"moved to {aside}"
            except OSError:
                where = "left in place"
            warnings.warn(f"gemsops: tuning cache {self.path} is unreadable ({err}); {where}, retuning")
            return {}

    def get(self, key: str):
        if self.entries is None:
            self.entries = self._read()
        return self.entries.get(key)

    def put(self, key: str, value: dict) -> None:
        if self.entries is None:
            self.entries = self._read()
        self.entries[key] = value
        if not self.writable:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(str(self.path) + ".lock", "a") as lock:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                merged = self._read()  # keep what other processes wrote meanwhile
                merged.update(self.entries)
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    json.dump(merged, f, indent=0, sort_keys=True)
                os.replace(tmp, self.path)
                self.entries = merged
        except OSError as err:
            self.writable = False
            warnings.warn(f"gemsops: cannot write the tuning cache in {self.path.parent} ({err}); "
                          "tuning results are kept in memory for this process only")


class Tuner:
    """Chooses and remembers a config for one kernel.

    ``kernels`` are the Triton functions whose source defines what a config means; a
    change to their source (or to the candidate list) starts a fresh cache entry.
    ``default``/``candidates`` are used when the vendor YAML has no block for ``name``.
    ``cold``: time candidates with ``benchmark_cold`` instead of ``benchmark``.
    """

    def __init__(self, name: str, kernels=(), default: dict | None = None, candidates=None, cold: bool = False):
        self.name = name
        block = VENDOR.config(name) if VENDOR else {}
        # YAML wins over the in-code fallback, so a vendor can retune without code changes
        self.default = dict(block.get("default", default or {}))
        self.candidates = [dict(c) for c in block.get("candidates", candidates or [])] or [self.default]
        src = "".join(getattr(k, "src", "") or "" for k in kernels) + json.dumps(self.candidates, sort_keys=True)
        self.cold = cold
        if cold:  # picks timed the other way are not reused
            src += "|cold"
        self.source_hash = hashlib.sha256(src.encode()).hexdigest()[:16]
        self.kernels = tuple(kernels)
        self.memory: dict = {}
        self.lock = threading.Lock()
        self.disk: DiskCache | None = None
        _TUNERS.append(self)

    def _disk(self) -> DiskCache:
        if self.disk is None:
            self.disk = DiskCache(cache_dir() / f"{self.name}-{self.source_hash}.json")
        return self.disk

    def _entry_key(self, key) -> str:
        device = VENDOR.device_name if VENDOR else "none"
        return f"{key!r}|{device}|triton-{triton.__version__}"

    def choose(self, key, run: Callable[[dict], object], cold: bool = False) -> dict:
        """The config for ``key``; on a miss, time ``run(config)`` for each candidate.

        ``cold``: time this key with L2 cleared even when the tuner replays warm calls (its
        input is larger than L2, so no model call finds it there); the pick is kept apart.
        """
        if cold and not self.cold:
            key = (key, "cold")
        else:
            cold = self.cold
        cfg = self.memory.get(key)
        if cfg is not None:
            return cfg
        with self.lock:
            cfg = self.memory.get(key)
            if cfg is not None:
                return cfg
            if len(self.candidates) == 1 or not can_benchmark():
                cfg = self.default or self.candidates[0]
            else:
                entry = self._entry_key(key)
                cfg = self._disk().get(entry)
                if cfg is not None:
                    stats.disk_hits += 1
                elif capturing() or _compiling_only():
                    # nothing can be timed inside a CUDA graph capture (the tuner's own
                    # graph timing included), nor while another tuner compiles its
                    # candidates: the default serves this call, not memoized
                    return self.default or self.candidates[0]
                else:
                    try:
                        cfg = self._tune(run, cold)
                    except NotOnCurrentDevice as err:
                        # the inputs live on another GPU than the current one: time there
                        if err.device is None:
                            raise
                        with _current_device_set_to(err.device):
                            cfg = self._tune(run, cold)
                    self._disk().put(entry, cfg)
            self.memory[key] = cfg
            return cfg

    def _tune(self, run, cold: bool) -> dict:
        outer, _tuning.active = _tuning.active, True  # a run may tune another kernel inside
        try:
            return self._time_candidates(run, cold)
        finally:
            _tuning.active = outer

    def _time_candidates(self, run, cold: bool) -> dict:
        _compile_all(self.candidates, run, self.kernels)
        timer = benchmark_cold if cold else benchmark
        times = []
        error = None
        for cfg in self.candidates:
            try:
                run(cfg)  # compile outside the timed region
                ms = timer(lambda: run(cfg))
            except NotOnCurrentDevice:
                raise  # no config can run here: the inputs (see ``choose``)
            except Exception as err:  # a config the compiler rejects (too much shared memory...)
                ms, error = float("inf"), err
            stats.benchmarks_run += 1
            times.append(ms)
        best_ms = min(times)
        if best_ms == float("inf"):
            raise RuntimeError(f"gemsops: no candidate config of {self.name} ran; the last one raised "
                               f"{type(error).__name__}: {error}") from error
        # The candidates within RETIME_WITHIN of the fastest are timed once more, in reverse
        # order, and their two times averaged: a GPU's clock drifts while it tunes (it
        # heats up, another process starts), and in one pass a config timed in a fast
        # moment wins. On an H100, three one-pass tunings of a 4096^3 GEMM picked three
        # configs whose cold times then ranged from 197 to 239 us.
        close = [i for i, ms in enumerate(times) if ms <= best_ms * (1 + RETIME_WITHIN)]
        if len(close) > 1:
            for i in reversed(close):
                cfg = self.candidates[i]
                try:
                    times[i] = (times[i] + timer(lambda: run(cfg))) / 2
                except Exception:  # noqa: BLE001  (it ran once; keep that time)
                    pass
        return self.candidates[min(close, key=times.__getitem__)]


def _compiling_only() -> bool:
    from . import launch  # launch imports this module

    return launch.compiling_only()


def _compile_all(candidates, run, kernels) -> None:
    """Compile every candidate's ``kernels`` at once in a thread pool, running none of them
    (other kernels a run launches do run: see ``launch.compile_only``).

    Compiling dominates a first tuning: 10-20 candidates at 0.2-1 s each, one after the
    other. Triton's compiler releases the GIL in its MLIR passes and in ptxas, so on a
    machine with several cores the timing loop that follows finds its kernels compiled
    and waits about as long as the slowest candidate instead of the sum. A candidate
    that does not compile is skipped here and fails again, measurably, when timed.
    """
    async_mode = getattr(triton, "AsyncCompileMode", None)  # Triton >= 3.4
    # a tuner that names no kernels cannot say which launches to hold back: compile as we time
    if async_mode is None or len(candidates) < 2 or _workers() < 2 or not kernels:
        return
    from . import launch

    try:
        with launch.compile_only(kernels), async_mode(_pool(), ignore_errors=True):
            for cfg in candidates:
                try:
                    run(cfg)
                except Exception:  # noqa: BLE001  (timed, and reported as failing, below)
                    pass
    except RuntimeError:  # compile_only or an AsyncCompileMode already active: compile as we time
        pass


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=min(_workers(), 16), thread_name_prefix="gemsops-compile")
    return _POOL


_TUNERS: list[Tuner] = []


def all_tuners() -> list[Tuner]:
    return list(_TUNERS)

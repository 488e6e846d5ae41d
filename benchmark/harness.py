"""Timing, peers and per-case measurement.

Timing. Each implementation is timed with the median of ``triton.testing.do_bench``
(which flushes L2 before every repetition) and, separately, as the steady-state time
per call of back-to-back calls between two CUDA events (inputs rotated among several
sets when one set fits in L2; the median of three such loops). The flush kernel that
do_bench launches before each repetition can hide up to its own duration of host work,
so a library with heavy per-call Python cost looks better under do_bench than in a
model; the reported latency is therefore the larger of the two. Both numbers are kept in
the JSON. Python's cyclic garbage collector is off while timing (as ``timeit`` does): a
full collection over the suite's long-lived objects can land inside one implementation's
loop and stand for its per-call cost.

Peers. gemsops runs through ``gemsops.use_gems(include=...)`` (or global ``enable()``
with ``--enable``), the way users call it. FlagGems runs through its global
``enable()`` into a fresh ``torch.library.Library`` that is destroyed afterwards (its
fastest user-facing path; its ``use_gems`` costs more per call). Liger-Kernel runs
through its autograd Functions, the calls behind ``liger_kernel.transformers.functional``.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import math
import os
import sys
import time
import types
import warnings
from dataclasses import dataclass

import torch

from .cases import ENABLE, Case

PEERS = ("flaggems", "liger")


@dataclass
class Timing:
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    loop_ms: float = 30.0  # length of the back-to-back measurement
    max_sets: int = 8  # input sets to rotate through
    set_budget: int = 2 << 30  # bytes all rotated input sets may take


QUICK = Timing(warmup_ms=10.0, rep_ms=40.0, loop_ms=15.0)
FULL = Timing()
OUTLIER_RATIO = 1.25  # two do_bench runs of one implementation this far apart get a third


# ---------------------------------------------------------------- timing

def do_bench_ms(fn, timing: Timing) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=timing.warmup_ms, rep=timing.rep_ms, return_mode="median"))


def loop_ms(fn, n: int) -> float:
    """Per-call time of ``n`` back-to-back calls (host cost shows when it exceeds GPU time)."""
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / n


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def cpu_ms(fn, n: int = 3) -> float:
    """Median wall time of ``fn`` on the CPU (used only when the suite runs without a GPU: tests)."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return sorted(samples)[len(samples) // 2]


def time_fn(fn, timing: Timing, device: str = "cuda") -> dict:
    """``{"ms", "bench_ms", "loop_ms"}`` for an already warmed-up ``fn``."""
    if device != "cuda":
        ms = cpu_ms(fn)
        return {"ms": ms, "bench_ms": ms, "loop_ms": ms}
    with gc_paused():
        bench = do_bench_ms(fn, timing)
        n = int(min(300, max(3, timing.loop_ms / max(bench, 1e-3))))
        # median of three loops: one loop can catch a stall of the host (another process, a
        # page fault) that would then stand for the op's cost. A stall only adds time, so a
        # first loop no slower than do_bench says the GPU sets the pace: two more could
        # change ``ms`` only by both stalling, and they are skipped
        loops = [loop_ms(fn, n)]
        if loops[0] > bench:
            loops += [loop_ms(fn, n), loop_ms(fn, n)]
        loop = sorted(loops)[len(loops) // 2]
    return {"ms": max(bench, loop), "bench_ms": bench, "loop_ms": loop}


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off inside the block (back to its previous state after)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def rotating(call, sets: list):
    """A no-argument function that calls ``call`` on the input sets in turn."""
    if len(sets) == 1:
        only = sets[0]
        return lambda: call(only)
    state = {"i": 0}
    n = len(sets)

    def fn():
        i = state["i"]
        state["i"] = i + 1 if i + 1 < n else 0
        return call(sets[i])

    return fn


def tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes() if obj.numel() else 0
    if isinstance(obj, dict):
        seen, total = set(), 0
        for v in _tensors(obj):
            key = v.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += v.untyped_storage().nbytes()
        return total
    return 0


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def num_sets(set_bytes: int, l2_bytes: int, timing: Timing) -> int:
    """Input sets to rotate so that the sets together exceed three times the L2 cache."""
    if set_bytes <= 0:
        return 1
    want = math.ceil(3 * l2_bytes / set_bytes)
    return int(max(1, min(timing.max_sets, want, timing.set_budget // set_bytes)))


def clone_inputs(obj):
    """A deep copy of an input set that keeps views' layouts (for in-place ops' checks)."""
    if isinstance(obj, torch.Tensor):
        out = torch.empty_strided(obj.shape, obj.stride(), dtype=obj.dtype, device=obj.device)
        return out.copy_(obj)
    if isinstance(obj, dict):
        return {k: clone_inputs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_inputs(v) for v in obj)
    return obj


# ---------------------------------------------------------------- ceilings

def measure_ceilings(timing: Timing) -> dict:
    """Device-to-device copy bandwidth (1 GiB, read + write) and cuBLAS bf16 mm peak (8192^3)."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    fn = lambda: dst.copy_(src)  # noqa: E731
    fn()
    ms = do_bench_ms(fn, timing)
    copy_gbps = 2 * n / (ms * 1e-3) / 1e9
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    fn = lambda: torch.mm(a, b)  # noqa: E731
    fn()
    ms_mm = do_bench_ms(fn, timing)
    return {"copy_gbps": copy_gbps, "copy_us": ms * 1e3, "mm_tflops": 2 * 8192 ** 3 / (ms_mm * 1e-3) / 1e12,
            "mm_us": ms_mm * 1e3}


# ---------------------------------------------------------------- which overloads a call hits

def _overload_name(func) -> str:
    schema = func._schema
    name = schema.name.split("::", 1)[-1]
    return f"{name}.{schema.overload_name}" if schema.overload_name else name


def detect_overloads(fn, inp) -> list[str]:
    """The aten overloads (below autograd) that ``fn(inp)`` dispatches, in first-call order."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class _Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            name = _overload_name(func)
            if name not in seen:
                seen.append(name)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), _Record():
        fn(inp)
    return seen


def gems_include(case_names, detected) -> list[str]:
    """Overloads gemsops declares for the case's op names: its families and exact overloads,
    plus the overloads of those names the native call dispatched (``softmax`` reaches
    ``_softmax``). Other overloads the call hit (the pieces of a decomposed composite, an
    ``add`` inside a CPU ``rms_norm``) do not make the op "served by gems"."""
    from gemsops.runtime import registry

    decls, fams = registry.declarations(), registry.families()
    bases = {n.split(".")[0] for n in case_names}
    out: set[str] = set()
    for name in case_names:
        if name in fams:
            out.update(fams[name])
        elif name in decls:
            out.add(name)
    for name in detected:
        if name in decls and name.split(".")[0] in bases:
            out.add(name)
    return sorted(out)


# ---------------------------------------------------------------- peers

@contextlib.contextmanager
def python_forwarding(overloads):
    """Within this block each of ``overloads`` (gems-declared aten overloads) dispatches to
    a Python kernel that only calls torch's own kernel for it.

    What remains is the cost of torch.library's Python dispatch: the dispatcher boxing the
    arguments into Python objects, the Python call, and the boxed call back into torch. It
    is the floor under any Python-registered op library's host cost, before that library
    does anything, so the host-overhead and end-to-end modes report it next to gems.
    Registered where gems would register each overload (its first dispatch key: the
    autograd key of autograd-level declarations). Use it with no gems scope open.
    """
    import gemsops
    from gemsops.runtime import registry

    if gemsops.all_registered_ops():
        raise RuntimeError("python_forwarding: gems kernels are registered; close use_gems/enable first")
    decls = registry.declarations()
    libs = []
    try:
        for overload in overloads:
            native = registry.native(overload)  # torch's kernel, captured before the forwarder exists

            def forward(*args, _native=native, **kwargs):
                return _native(*args, **kwargs)

            lib = torch.library.Library("aten", "IMPL")
            libs.append(lib)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel.*")
                warnings.filterwarnings("ignore", message=".*Warning only once for all operators.*")
                lib.impl(overload, forward, decls[overload].dispatch_keys()[0])
        yield
    finally:
        for lib in libs:
            lib._destroy()


def load_flaggems():
    """The ``flag_gems`` module, or None when it is not importable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("flag_gems")
    except Exception:  # noqa: BLE001  (any import failure means "not available")
        return None


@contextlib.contextmanager
def flaggems_enabled(fg):
    """FlagGems' global ``enable()`` into a fresh library, destroyed on exit."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "lib" in inspect.signature(fg.enable).parameters:
                fg.enable(lib=lib)
            else:  # an old signature: its global library stays registered until exit
                fg.enable()
        yield
    finally:
        lib._destroy()


def _kernel_line(overload: str, key: str = "CUDA") -> str:
    """The dispatcher's line for ``overload``'s kernel on ``key`` (changes when a library overrides it)."""
    name, _, over = overload.partition(".")
    try:
        dump = torch._C._dispatch_dump(f"aten::{name}" + (f".{over}" if over else ""))
    except RuntimeError:
        return ""
    for line in dump.splitlines():
        if line.startswith(key + ":"):
            return line
    return ""


def load_liger():
    """A namespace of Liger-Kernel's autograd Functions by class name, or None."""
    modules = ["rms_norm", "layer_norm", "swiglu", "rope", "cross_entropy", "fused_add_rms_norm"]
    ns = types.SimpleNamespace()
    found = False
    for mod in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = importlib.import_module(f"liger_kernel.ops.{mod}")
        except Exception:  # noqa: BLE001
            continue
        for attr in dir(m):
            if attr.startswith("Liger") and attr.endswith("Function"):
                setattr(ns, attr, getattr(m, attr))
                found = True
    return ns if found else None


# ---------------------------------------------------------------- checking outputs

def _flat_outputs(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat_outputs(o)]
    return []


def default_tol(dtype) -> float:
    return {torch.float32: 1e-3, torch.float64: 1e-9}.get(dtype, 2e-2)


def check_outputs(ref, out, tol: float) -> tuple[bool, float]:
    """(ok, error): max |out - ref| relative to max |ref|, per output tensor; NaN must match NaN."""
    refs, outs = _flat_outputs(ref), _flat_outputs(out)
    if len(refs) != len(outs) or not refs:
        return False, float("inf")
    worst = 0.0
    for r, o in zip(refs, outs):
        if r.numel() != o.numel():
            return False, float("inf")
        r = r.detach().reshape(-1).double()
        o = o.detach().reshape(-1).double()
        if not torch.equal(torch.isnan(r), torch.isnan(o)):
            return False, float("nan")
        fin = torch.isfinite(r) & torch.isfinite(o)
        if not torch.equal(r[~fin].nan_to_num(0.0), o[~fin].nan_to_num(0.0)):
            return False, float("inf")
        if fin.any():
            scale = r[fin].abs().max().item()
            err = (r[fin] - o[fin]).abs().max().item() / max(scale, 1e-6)
            worst = max(worst, err)
    return worst <= tol, worst


# ---------------------------------------------------------------- one case

class Runner:
    """Measures cases: native, gemsops, and the peers that are importable."""

    def __init__(self, timing: Timing, enable: bool = False, peers=PEERS, check: bool = True,
                 device: str = "cuda", parallel_peer_compile: bool = True):
        self.timing = timing
        self.device = device
        self.dispatch_key = "CUDA" if device == "cuda" else device.upper()
        self.enable = enable
        self.check = check
        self.fg = load_flaggems() if "flaggems" in peers else None
        self.liger = load_liger() if "liger" in peers else None
        # FlagGems' autotuner compiles its candidates one by one on first calls (most of a fresh
        # suite's wall time); gems' tuner compiles its own in parallel, and so may FlagGems' here
        self.peer_compile = "serial"
        if self.fg is not None and parallel_peer_compile and device == "cuda":
            from . import parallel_compile

            if parallel_compile.install():
                self.peer_compile = "parallel"
        self.l2 = 50 << 20
        if device == "cuda":
            self.l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", self.l2))

    def peer_versions(self) -> dict:
        """Installed versions of the peers that loaded (None where absent)."""
        out = {}
        for name, dist, mod in (("flaggems", "flag_gems", self.fg), ("liger", "liger_kernel", self.liger)):
            out[name] = _dist_version(dist) if mod is not None else None
        return out

    def run(self, case: Case) -> dict:
        t0 = time.perf_counter()
        res = self._run(case)
        res["wall_s"] = round(time.perf_counter() - t0, 2)  # the whole case: inputs, first calls, timing
        return res

    def _run(self, case: Case) -> dict:
        res = {"id": case.id, "op": case.op, "category": case.category, "shape": case.shape,
               "dtype": case.dtype_name, "bytes": case.bytes, "flops": case.flops, "note": case.note,
               "impls": {}}
        try:
            sets = [case.make(self.device)]
            n = num_sets(tensor_bytes(sets[0]), self.l2, self.timing)
            sets += [case.make(self.device) for _ in range(n - 1)]
        except torch.cuda.OutOfMemoryError as err:
            res["error"] = f"inputs: out of memory ({_short(err)})"
            torch.cuda.empty_cache()
            return res
        res["sets"] = len(sets)
        ref = None
        # timing loops of in-place ops (fused_add_rms_norm, rotary) rewrite sets[0]; every
        # implementation's first call and output check start from this untouched copy instead
        pristine = clone_inputs(sets[0])
        try:
            with torch.no_grad():
                ref = case.native(clone_inputs(pristine))
                res["impls"]["native"] = self._measure(case.native, sets)
        except Exception as err:  # noqa: BLE001
            res["impls"]["native"] = {"error": _short(err)}
        timed = [("native", case.native, contextlib.nullcontext)] if "ms" in res["impls"]["native"] else []
        for name, call, ctx in self._impls(case, sets[0], res):
            entry = res["impls"][name]
            try:
                out = None
                with torch.no_grad(), ctx():
                    entry["first_ms"] = _first_call_ms(call, clone_inputs(pristine), self.device)
                    if entry.get("served"):
                        # a registered kernel may never be reached: FlagGems' CUDA kernel for
                        # the composite aten::scaled_dot_product_attention is not dispatched
                        # to, and torch's cuDNN kernel runs instead (H100, FlagGems 5.0.2)
                        entry["served"] = _reaches_code(call, clone_inputs(pristine), _code_root(self.fg),
                                                        self.device)
                    if self.check and ref is not None:
                        out = call(clone_inputs(pristine))
                    entry.update(self._measure(call, sets))
                timed.append((name, call, ctx))
                if out is not None:  # compared outside the block: the check's own ops stay native
                    ok, err = check_outputs(ref, out, case.tol if case.tol is not None else default_tol(case.dtype))
                    entry["check"] = "ok" if ok else f"MISMATCH {err:.3g}"
                del out
            except AttributeError as err:
                if name in PEERS:  # this peer version lacks the function the case calls
                    entry["na"] = f"not in this version ({_short(err, 100)})"
                else:
                    entry["error"] = _short(err)
            except Exception as err:  # noqa: BLE001
                entry["error"] = _short(err)
                if isinstance(err, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
        self._second_pass(res, timed, sets)
        del sets, ref, pristine
        return res

    def _second_pass(self, res: dict, timed: list, sets) -> None:
        """Time every implementation again in the reverse order and combine its two runs.

        A GPU under sustained load slows down as it heats (an H100 ran one 8192^3 GEMM at 778
        TFLOP/s, then at 726 seconds later; native and gems timed back to back read 0.96x in
        one round and 1.14x in the next). Timing A, B, ..., B, A gives every implementation one
        early and one late slot, so the mean of its two ``do_bench`` times cancels a drift that
        is steady over the case. The back-to-back loop measures host cost, which a stall of
        the machine only adds to (one loop read 110 us per call where its twin read 27): the
        smaller of the two, as ``timeit`` does. ``ms`` is again the larger of the two measures.

        Two ``do_bench`` times further apart than OUTLIER_RATIO are not drift: something
        stalled one run (a 29 us elementwise kernel once read 259 us in one run, 31 in the
        other). A third run is taken then, and the median of the three counts.
        """
        if len(timed) < 2 or self.device != "cuda":
            return
        for name, call, ctx in reversed(timed):
            entry = res["impls"][name]
            runs = [entry]
            try:
                with torch.no_grad(), ctx():
                    runs.append(self._measure(call, sets))
                    benches = [r["bench_ms"] for r in runs]
                    if max(benches) > OUTLIER_RATIO * min(benches):
                        runs.append(self._measure(call, sets))
            except Exception as err:  # noqa: BLE001  (the runs so far stand)
                entry["second_run_error"] = _short(err)
                if len(runs) < 2:
                    continue
            benches = sorted(r["bench_ms"] for r in runs)
            entry["ms_runs"] = [r["ms"] for r in runs]
            entry["bench_ms"] = benches[1] if len(runs) == 3 else sum(benches) / 2
            entry["loop_ms"] = min(r["loop_ms"] for r in runs)
            entry["ms"] = max(entry["bench_ms"], entry["loop_ms"])

    def _measure(self, call, sets) -> dict:
        fn = rotating(call, sets)
        for _ in range(2):
            fn()
        sync(self.device)
        return time_fn(fn, self.timing, self.device)

    def _impls(self, case: Case, inp, res):
        """(name, call, context factory) for every implementation that can run this case."""
        import gemsops

        impls = res["impls"]
        # gemsops
        if case.gems_direct is not None:
            fn = getattr(gemsops.ops, case.gems_direct, None)
            if fn is None:
                impls["gems"] = {"na": f"gemsops.ops.{case.gems_direct} not available"}
            else:
                impls["gems"] = {"path": f"gemsops.ops.{case.gems_direct}"}
                ctx = _gems_enabled if self.enable else contextlib.nullcontext
                yield "gems", (lambda i, fn=fn: case.gems_call(fn, i)), ctx
        else:
            include = gems_include(case.gems_aten, res.setdefault("aten", detect_overloads(case.native, inp)))
            if not include:
                impls["gems"] = {"na": "not available (no gems kernel for " + ", ".join(res["aten"] or
                                                                                       case.gems_aten) + ")"}
            else:
                if self.enable:
                    impls["gems"] = {"path": "gemsops.enable()", "include": include}
                    yield "gems", case.native, _gems_enabled
                else:
                    impls["gems"] = {"path": "use_gems", "include": include}
                    yield "gems", case.native, (lambda: gemsops.use_gems(include=include))
        # FlagGems
        if self.fg is not None and case.flaggems is not None:
            if case.flaggems == ENABLE:
                entry = impls["flaggems"] = {"path": "flag_gems.enable()"}
                # the case's op names too: a composite op (rms_norm) a peer overrides at its
                # own level never shows among the overloads native dispatch reaches
                bases = {n.split(".")[0] for n in case.gems_aten}
                overloads = [o for o in dict.fromkeys([*(res.get("aten") or detect_overloads(case.native, inp)),
                                                       *case.gems_aten]) if o.split(".")[0] in bases]
                yield "flaggems", case.native, (lambda: self._flaggems_ctx(overloads, entry))
            else:
                impls["flaggems"] = {"path": "flag_gems fused"}
                yield "flaggems", (lambda i: case.flaggems(self.fg, i)), contextlib.nullcontext
        # Liger
        if self.liger is not None and case.liger is not None:
            impls["liger"] = {"path": "liger_kernel.ops"}
            yield "liger", (lambda i: case.liger(self.liger, i)), contextlib.nullcontext

    @contextlib.contextmanager
    def _flaggems_ctx(self, overloads, entry: dict):
        """FlagGems enabled; ``entry["served"]``: whether it replaced one of these overloads' kernels."""
        names = list(overloads)
        before = {o: _kernel_line(o, self.dispatch_key) for o in names}
        t0 = time.perf_counter()
        with flaggems_enabled(self.fg):
            entry["enable_ms"] = (time.perf_counter() - t0) * 1e3
            # the run's reachability check may already have said no (re-entered for the second pass)
            entry["served"] = entry.get("served", True) and any(
                _kernel_line(o, self.dispatch_key) != before[o] for o in names)
            yield


@contextlib.contextmanager
def _gems_enabled():
    import gemsops

    gemsops.enable()
    try:
        yield
    finally:
        gemsops.disable()


def _first_call_ms(call, inp, device: str = "cuda") -> float:
    """Wall time of the first call (compilation and tuning included)."""
    sync(device)
    t0 = time.perf_counter()
    call(inp)
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def _code_root(obj) -> str:
    """Where ``obj``'s Python code lives: a package's folder, else the file defining its class."""
    module_file = getattr(obj, "__file__", None)
    if module_file:
        return os.path.dirname(os.path.abspath(module_file)) + os.sep
    return os.path.abspath(inspect.getfile(type(obj)))


def _reaches_code(call, inp, root: str, device: str = "cuda") -> bool:
    """Whether ``call(inp)`` runs a Python function from under ``root`` (on this thread)."""
    seen = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(root):
            seen.append(frame.f_code.co_name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        call(inp)
        sync(device)
    finally:
        sys.setprofile(previous)
    return bool(seen)


def _dist_version(dist: str) -> str:
    from importlib import metadata

    for name in (dist, dist.replace("_", "-")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    mod = importlib.import_module(dist)
    return str(getattr(mod, "__version__", "unknown"))


def _short(err: BaseException, limit: int = 160) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."

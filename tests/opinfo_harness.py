"""PyTorch's OpInfo samples run natively and through gems, for every declared aten overload.

Which op_db entries exercise which gems overloads is traced, not listed: every entry's
first samples run once under ``GemsProbe(dry=True)`` with every gems overload enabled (gems'
dispatch entries in place, torch's kernels computing), so a declaration that lands on a
branch is picked up without touching this file. Then, for each planned (entry, variant,
dtype), each sample runs natively and with the entry's gems families enabled
(``only_enable``, process-wide, because autograd runs CUDA backward on its own threads
where a thread-local ``use_gems`` would not apply), and one of these is recorded:

- agreed: a gems host function served at least one call and the results match,
- routed: gems' host functions were reached but all sent the call to torch's kernel,
- not_reached: no gems host function was called for this sample (results still compared),
- random: native results change with the RNG seed, or gems served an overload that draws
  random numbers (RNG_OVERLOADS); only shape and dtype are compared,
- ref_error: torch's own kernel raised on the sample (gems is then only run for the record),
- failed: gems raised where torch did not, results disagree, an input was mutated, or an
  in-place / out= variant did not return its target.

Results agree when every tensor matches native within the per-dtype tolerance of
tests/util.py, or, failing that, when gems is no further from a float64 reference than
twice native's own distance or one tolerance (two for bf16 on the interpreter, whose
fp32 -> bf16 casts truncate), NaNs in the same places: long reductions and chains of
low-precision roundings where gems and torch round differently. A sample that gems served
with two calls or more (a composite: each call rounds its result before the next reads it)
also agrees when every element is within one tolerance plus twice its rounding spread: how
far the float64 result moves when the floating inputs move by their own rounding (half an
ulp of the dtype, random signs, ``SPREAD_DRAWS`` draws). Such chains can be
ill-conditioned: one OpInfo multi_head_attention_forward float32 sample (on CUDA) moves by
a median 3.8 tolerance units (up to 15.8 in 300 draws of uniform moves) under that input
rounding alone, where torch happens to land 0.2 from float64. A single call never gets
this allowance: its inputs are exact.

Variants: ``op`` (the OpInfo's function), ``inplace`` (its in-place method), ``out``
(``out=`` tensors allocated like native's result), ``grad`` (forward plus
``autograd.grad`` with fixed random cotangents, for the backward overloads). A variant is
planned only when its trace reached a declared overload.

Bounded cost (CI runs this through Triton's interpreter on 2 cores): ``SAMPLE_CAP``
samples per (entry, variant) for float32 and a quarter of it for the other dtypes; on the
interpreter samples holding more than ``INTERPRETER_MAX_NUMEL`` elements are skipped; the
plan takes every entry named after an overload it reaches ("primary") and tops each
overload up to ``SECONDARY_PER_OVERLOAD`` planned (entry, variant) pairs with the most
targeted other entries. The pytest run (``pytest_tasks``) adds float16/bfloat16 on the
plain-call variant of primary entries. The summary states these limits. Measured with
341 declared overloads (all op branches of 22:00 UTC overlaid on main): 628 tasks, about
120 s of CPU on this machine, failures included.

pytest: tests/ops/test_opinfo.py, one test per task; each result rides on its report
(user property ``PROPERTY``) so that ``terminal_summary`` can print the table in the
controller of a pytest-xdist run too (it needs a ``pytest_terminal_summary`` hook in
tests/conftest.py calling it; single-process runs register one themselves).

Command line (the GPU run)::

    PYTHONPATH=src python -m tests.opinfo_harness --device cuda --dtype float16 --cap 4 \\
        --time-budget 420 --out opinfo-report     # opinfo-report/opinfo-float16.{json,md}

``--dtype`` repeats (one command per dtype keeps each under the device's 10 minutes);
``--secondary -1`` runs every entry that reaches an overload; ``--time-budget`` stops
starting tasks after that many seconds and lists the rest as not run.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
import time
import traceback
import warnings
import zlib

if "GEMS_VENDOR" not in os.environ:  # same default as tests/conftest.py, before gemsops loads
    import torch

    os.environ["GEMS_VENDOR"] = "nvidia" if torch.cuda.is_available() else "interpreter"

import torch  # noqa: E402
from torch.utils._pytree import tree_flatten, tree_map  # noqa: E402

import gemsops  # noqa: E402
from gemsops.runtime import registry  # noqa: E402
from tests.gems_probe import GemsProbe  # noqa: E402
from tests.util import TOL  # noqa: E402

# The knob: samples per (OpInfo entry, variant) in float32. Other dtypes get a quarter.
SAMPLE_CAP = int(os.environ.get("GEMS_OPINFO_SAMPLE_CAP", "4"))
# Samples whose tensors hold more elements than this are skipped on the interpreter.
INTERPRETER_MAX_NUMEL = 4096
# Each reached overload is exercised by at least this many planned (entry, variant)
# pairs: entries named after it first, then others that reach it (-1: every one).
SECONDARY_PER_OVERLOAD = int(os.environ.get("GEMS_OPINFO_SECONDARY", "2"))
TRACE_SAMPLES = 2  # samples per entry used to trace which overloads it reaches
TRACE_MAX_NUMEL = 4096  # small samples trace as well as big ones, and faster
VARIANTS = ("op", "inplace", "out", "grad")
# outputs are uninitialised memory: nothing to compare
UNDEFINED_OUTPUT = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided",
                    "empty_permuted", "resize_", "resize_as_"}
# integer preference for entries without floating support (bitwise ops...)
FALLBACK_DTYPES = (torch.int64, torch.int32, torch.bool, torch.uint8)
RNG_OVERLOADS = frozenset({"native_dropout"})  # gems overloads that draw random numbers
OUTCOMES = ("agreed", "routed", "not_reached", "random", "ref_error", "failed")
SPREAD_DRAWS = 8  # perturbed float64 runs behind a composite sample's rounding spread


def _op_db():
    from torch.testing._internal.common_methods_invocations import op_db

    return op_db


def entry_key(op) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def _norm(name: str) -> str:
    base = name.split(".")[-1].strip("_")
    for prefix in ("native_",):
        base = base.removeprefix(prefix)
    return base


def _overload_base(overload: str) -> str:
    return _norm(overload.split(".")[0])


def _interpreter() -> bool:
    return bool(gemsops.VENDOR and gemsops.VENDOR.interpreter)


# -- sample handling ---------------------------------------------------------------------------
def _numel(sample) -> int:
    leaves, _ = tree_flatten((sample.input, sample.args, sample.kwargs))
    return sum(t.numel() for t in leaves if isinstance(t, torch.Tensor))


def _samples(op, device, dtype, count, requires_grad=False, max_numel=None):
    """The first ``count`` samples of ``op`` holding at most ``max_numel`` elements, seeded.

    ``max_numel`` defaults to ``INTERPRETER_MAX_NUMEL`` on the interpreter, no limit
    elsewhere. When every sample is larger, the smallest one seen is used for tracing
    (``count`` of them are never replaced by bigger ones when running).
    """
    torch.manual_seed(zlib.crc32(entry_key(op).encode()))
    if max_numel is None and _interpreter():
        max_numel = INTERPRETER_MAX_NUMEL
    kept, skipped = [], 0
    with _quiet_sample_iter():
        gen = op.sample_inputs(device, dtype, requires_grad=requires_grad, set_seed=False)
    for s in itertools.islice(gen, 8 * count + 8):
        if max_numel is not None and _numel(s) > max_numel:
            skipped += 1
            continue
        if len(kept) < count:
            kept.append(s)
        else:
            skipped += 1
    return kept, skipped


@contextlib.contextmanager
def _quiet_sample_iter():
    """op_db's sample iterator looks for the running unittest through ``inspect.stack()``
    (tens of ms under pytest, per entry); nothing here is a unittest, so skip the search."""
    from torch.testing._internal import common_utils
    from torch.testing._internal.opinfo import core

    mods = [m for m in (common_utils, core) if hasattr(m, "extract_test_fn")]
    saved = [m.extract_test_fn for m in mods]
    for m in mods:
        m.extract_test_fn = _no_test_fn
    try:
        yield
    finally:
        for m, fn in zip(mods, saved):
            m.extract_test_fn = fn


def _no_test_fn():
    return None


def clone_keep_strides(t: torch.Tensor) -> torch.Tensor:
    """A copy with the same sizes, strides and storage offset (non-contiguous stays so)."""
    if t.layout != torch.strided:
        return t.clone()
    with torch.no_grad():
        if t.numel() == 0:
            return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
        extent = t.storage_offset() + 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
        base = torch.empty(extent, dtype=t.dtype, device=t.device)
        out = base.as_strided(t.shape, t.stride(), t.storage_offset())
        out.copy_(t)
    return out


def _detached(tree):
    return tree_map(lambda x: clone_keep_strides(x.detach()) if isinstance(x, torch.Tensor) else x, tree)


def _to_ref(tree):
    def up(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.detach().to(torch.float64, copy=True)
        if isinstance(x, torch.Tensor) and x.is_complex():
            return x.detach().to(torch.complex128, copy=True)
        return clone_keep_strides(x.detach()) if isinstance(x, torch.Tensor) else x

    return tree_map(up, tree)


# -- calling a variant -------------------------------------------------------------------------
@dataclasses.dataclass
class Call:
    """What one variant returns: its outputs, and the gradients for ``grad``."""

    outputs: object
    target: object = None  # the tensor(s) an in-place / out= call must return


def _run_variant(op, variant, inp, args, kwargs, out_like=None, cotangents=None):
    if variant == "op":
        return Call(op.op(inp, *args, **kwargs))
    if variant == "inplace":
        res = op.inplace_variant(inp, *args, **kwargs)
        return Call((res, inp), target=inp)
    if variant == "out":
        out = tree_map(lambda t: torch.empty_like(t) if isinstance(t, torch.Tensor) else t, out_like)
        res = op.op(inp, *args, **kwargs, out=out)
        return Call((res, out), target=out)
    if variant == "grad":
        leaves = [t for t in tree_flatten((inp, args, kwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        res = op.op(inp, *args, **kwargs)
        outs = [t for t in tree_flatten(res)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        grads = torch.autograd.grad(outs, leaves, cotangents, allow_unused=True)
        return Call((res, grads))
    raise ValueError(variant)


def _variant_applies(op, variant, sample, dtype) -> bool:
    if variant == "inplace":
        return op.inplace_variant is not None and isinstance(sample.input, torch.Tensor)
    if variant == "out":
        return bool(op.supports_out)
    if variant == "grad":
        return bool(op.supports_autograd) and (dtype.is_floating_point or dtype.is_complex)
    return True


def _fresh_args(sample, variant):
    """Inputs for one run: grad keeps the (leaf) sample tensors, others get stride-true copies."""
    if variant == "grad":
        return sample.input, sample.args, sample.kwargs
    return _detached(sample.input), _detached(sample.args), _detached(sample.kwargs)


# -- tracing which overloads an entry reaches --------------------------------------------------
@dataclasses.dataclass
class Plan:
    device: str
    declared: list
    hits: dict  # (entry key, variant) -> frozenset of overloads reached
    trace_dtype: dict  # entry key -> dtype used for tracing
    trace_errors: dict
    chosen: list  # (entry key, variant) planned
    primary: set
    trace_seconds: float


def primary_dtype(op, device, wanted=torch.float32):
    dts = op.supported_dtypes(device)
    if wanted in dts:
        return wanted
    if wanted == torch.float32:
        for d in FALLBACK_DTYPES:
            if d in dts:
                return d
    return None


_PLANS: dict = {}


def _silenced(fn):
    """Run ``fn`` with warnings ignored (op_db's deprecated entries warn on every call)."""
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_silenced
def trace(device: str) -> Plan:
    """Trace every op_db entry's first samples (see module doc); cached per device."""
    decls = sorted(registry.declarations())
    key = (device, tuple(decls))
    if key in _PLANS:
        return _PLANS[key]
    t0 = time.perf_counter()
    ops = {entry_key(op): op for op in _op_db()}
    work, errors, tdtype = [], {}, {}
    for k, op in ops.items():
        if op.name in UNDEFINED_OUTPUT:
            continue
        dt = primary_dtype(op, device)
        if dt is None:
            continue
        tdtype[k] = dt
        try:
            grad = bool(op.supports_autograd) and dt.is_floating_point
            samples, _ = _samples(op, device, dt, TRACE_SAMPLES, requires_grad=grad, max_numel=TRACE_MAX_NUMEL)
        except Exception as err:  # an entry whose sample generator fails here
            errors[k] = f"sample_inputs: {type(err).__name__}: {err}"[:300]
            continue
        for s in samples:
            for variant in VARIANTS:
                if not _variant_applies(op, variant, s, dt):
                    continue
                prep = _prepare(op, variant, s, dt)
                if prep is not None:
                    work.append((k, variant, prep))
    hits = collections.defaultdict(set)
    if decls:
        with GemsProbe(dry=True) as probe:
            gemsops.enable()
            try:
                for k, variant, (inp, args, kwargs, out_like, cot) in work:
                    snap = probe.snapshot()
                    try:
                        _run_variant(ops[k], variant, inp, args, kwargs, out_like, cot)
                    except Exception:
                        pass  # torch's own error: the entry's sample is not valid for this variant
                    served, _, _ = probe.delta(snap)
                    hits[(k, variant)].update(served)
            finally:
                gemsops.disable()
    hits = {kv: frozenset(v) for kv, v in hits.items() if v}
    chosen, primary = _choose(hits, decls)
    plan = Plan(device, decls, hits, tdtype, errors, chosen, primary, time.perf_counter() - t0)
    _PLANS[key] = plan
    return plan


def _prepare(op, variant, sample, dtype, cot_dtype=None):
    """(input, args, kwargs, out_like, cotangents) for one run, made natively; None if n/a.

    Cotangents are float64 normals rounded to ``cot_dtype`` (default: each output's
    dtype), so a float64 reference run can use exactly the values the others use.
    """
    inp, args, kwargs = _fresh_args(sample, variant)
    out_like = cot = None
    if variant == "out":
        try:
            with torch.no_grad():
                res = op.op(*_fresh_args(sample, "op")[:1], *_fresh_args(sample, "op")[1],
                            **_fresh_args(sample, "op")[2])
        except Exception:
            return None
        out_like = tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, res)
    elif variant == "grad":
        try:
            with torch.enable_grad():
                res = op.op(inp, *args, **kwargs)
        except Exception:
            return None
        outs = [t for t in tree_flatten(res)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        leaves = [t for t in tree_flatten((inp, args, kwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        if not outs or not leaves or not all(t.is_floating_point() for t in outs):
            return None
        gen = torch.Generator(device="cpu").manual_seed(1234)
        cot = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(cot_dtype or t.dtype).to(t.device, t.dtype)
               for t in outs]
    return inp, args, kwargs, out_like, cot


def _choose(hits, decls):
    """Entries named after an overload they reach, topped up so that every reached overload
    is exercised by at least ``SECONDARY_PER_OVERLOAD`` planned (entry, variant) pairs
    (all of them when it is negative), most targeted first: fewest gems overloads reached."""
    primary, chosen = set(), set()
    by_overload = collections.defaultdict(list)
    for (k, variant), ovs in hits.items():
        for ov in ovs:
            by_overload[ov].append((k, variant))
    for ov in decls:
        base = _overload_base(ov)
        prim = [c for c in by_overload.get(ov, []) if _norm(_entry_name(c[0])) == base]
        primary.update(prim)
        chosen.update(prim)
    for ov in decls:
        cands = by_overload.get(ov, [])
        have = sum(1 for c in cands if c in chosen)
        want = len(cands) if SECONDARY_PER_OVERLOAD < 0 else SECONDARY_PER_OVERLOAD
        others = sorted((c for c in cands if c not in chosen),
                        key=lambda c: (len(hits[c]), VARIANTS.index(c[1]), c))
        chosen.update(others[:max(0, want - have)])
    return sorted(chosen), primary


_NAMES: dict = {}


def _entry_name(key: str) -> str:
    if not _NAMES:
        for op in _op_db():
            _NAMES[entry_key(op)] = op.name
    return _NAMES.get(key, key)


# -- comparing ---------------------------------------------------------------------------------
class Mismatch(Exception):
    pass


def _leaves(x):
    return tree_flatten(x)[0]


def _compare(actual, expected, ref=None, dtype=None, path="out", spread=None):
    """Raise Mismatch unless ``actual`` matches ``expected`` (see module doc).

    ``spread``: per leaf of ``ref``, the element-wise rounding spread of a composite
    sample (:func:`_rounding_spread`), or None.
    """
    a_leaves, a_spec = tree_flatten(actual)
    e_leaves, e_spec = tree_flatten(expected)
    if len(a_leaves) != len(e_leaves):
        raise Mismatch(f"{path}: structure {a_spec} != {e_spec}")
    r_leaves = tree_flatten(ref)[0] if ref is not None else [None] * len(e_leaves)
    if len(r_leaves) != len(e_leaves):
        r_leaves = [None] * len(e_leaves)
    s_leaves = spread if spread is not None and len(spread) == len(e_leaves) else [None] * len(e_leaves)
    for i, (a, e, r, s) in enumerate(zip(a_leaves, e_leaves, r_leaves, s_leaves)):
        where = f"{path}[{i}]"
        if isinstance(e, torch.Tensor):
            if not isinstance(a, torch.Tensor):
                raise Mismatch(f"{where}: got {type(a).__name__}, expected a tensor")
            _compare_tensor(a, e, r if isinstance(r, torch.Tensor) else None, where, s)
        elif isinstance(e, float) and isinstance(a, (int, float)):
            if not (math.isclose(a, e, rel_tol=1e-5, abs_tol=1e-6) or (math.isnan(a) and math.isnan(e))):
                raise Mismatch(f"{where}: {a} != {e}")
        elif a != e and not (a is None and e is None):
            raise Mismatch(f"{where}: {a!r} != {e!r}")


def _compare_tensor(a, e, r, where, spread=None):
    if a.dtype != e.dtype:
        raise Mismatch(f"{where}: dtype {a.dtype} != {e.dtype}")
    if a.shape != e.shape:
        raise Mismatch(f"{where}: shape {tuple(a.shape)} != {tuple(e.shape)}")
    if a.device != e.device:
        raise Mismatch(f"{where}: device {a.device} != {e.device}")
    if e.layout != torch.strided:
        a, e = a.to_dense(), e.to_dense()
    a, e = a.detach(), e.detach()
    if not (e.is_floating_point() or e.is_complex()):
        if not torch.equal(a, e):
            bad = (a != e).sum().item()
            raise Mismatch(f"{where}: {bad} of {e.numel()} {e.dtype} elements differ")
        return
    t = TOL.get(e.dtype if e.is_floating_point() else torch.float32, TOL[torch.float32])
    try:
        torch.testing.assert_close(a, e, atol=t["atol"], rtol=t["rtol"], equal_nan=True)
        return
    except AssertionError as err:
        first = str(err).strip().splitlines()
        msg = " ".join(first[:4])
    if r is not None and r.shape == e.shape:
        rr = r.to(torch.complex128 if e.is_complex() else torch.float64)
        nan_same = torch.equal(torch.isnan(a), torch.isnan(e))
        err_a = _scaled_error(a, rr, t)
        err_e = _scaled_error(e, rr, t)
        if nan_same and err_a <= max(_ref_slack(e.dtype), 2.0 * err_e):
            return
        msg += f" | vs float64 reference: gems {err_a:.3g}, native {err_e:.3g} (tolerance units)"
        if spread is not None and spread.shape == e.shape:
            over = _beyond_spread(a, rr, spread, t)
            if nan_same and over <= 1.0:
                return
            msg += f"; {over:.3g}x the allowance of its rounding spread"
    raise Mismatch(f"{where}: {msg}")


def _beyond_spread(x, ref, spread, t) -> float:
    """Largest |x - ref| / (one tolerance + 2 * spread), element-wise; inf when the
    non-finite values differ. Above 1: outside what input rounding alone explains."""
    if not math.isfinite(_scaled_error(x, ref, t)):
        return math.inf
    x = x.to(ref.dtype)
    finite = torch.isfinite(ref)
    if not finite.any():
        return 0.0
    r = ref[finite]
    d = (x[finite] - r).abs() / (t["atol"] + t["rtol"] * r.abs() + 2.0 * spread[finite].to(ref.dtype))
    return float(d.max())


def _ref_slack(dtype) -> float:
    """Tolerance units gems may be from the float64 reference regardless of native's error.

    The interpreter truncates fp32 -> bf16 instead of rounding (shared/triton-interpreter.md),
    doubling the rounding error of every bf16 result a chain of kernels produces.
    """
    return 2.0 if dtype == torch.bfloat16 and _interpreter() else 1.0


def _scaled_error(x, ref, t) -> float:
    """Largest |x - ref| in tolerance units; inf when the non-finite values differ."""
    x = x.to(ref.dtype)
    finite = torch.isfinite(ref) & torch.isfinite(x)
    if not torch.equal(torch.isfinite(ref), torch.isfinite(x)):
        return math.inf
    infs = ~finite & ~torch.isnan(x)
    if not torch.equal(x[infs], ref[infs]):
        return math.inf
    if not finite.any():
        return 0.0
    d = (x[finite] - ref[finite]).abs() / (t["atol"] + t["rtol"] * ref[finite].abs())
    return float(d.max())


# -- running -----------------------------------------------------------------------------------
@dataclasses.dataclass
class SampleResult:
    index: int
    outcome: str
    served: dict
    routed: dict
    detail: str = ""


@dataclasses.dataclass
class TaskResult:
    entry: str
    variant: str
    dtype: str
    families: list
    samples: list
    skipped: int
    seconds: float
    error: str = ""  # the task could not start (sample generation failed)
    hits: list = dataclasses.field(default_factory=list)  # overloads the trace saw it reach

    def counts(self) -> collections.Counter:
        return collections.Counter(s.outcome for s in self.samples)

    def failures(self) -> list:
        return [s for s in self.samples if s.outcome == "failed"]

    def to_dict(self) -> dict:
        """Plain data (what pytest-xdist can ship from a worker in a report's properties)."""
        d = dataclasses.asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TaskResult":
        d = dict(d)
        d["samples"] = [SampleResult(**x) for x in d["samples"]]
        return cls(**d)


def cap_for(dtype) -> int:
    return SAMPLE_CAP if dtype == torch.float32 or not dtype.is_floating_point else max(1, SAMPLE_CAP // 4)


def tasks_for(plan: Plan, dtypes) -> list:
    """(entry key, variant, dtype) to run: the plan's entries that support each dtype."""
    ops = {entry_key(op): op for op in _op_db()}
    out = []
    for k, variant in plan.chosen:
        for dt in dtypes:
            d = primary_dtype(ops[k], plan.device, dt)
            if d is None or (d != dt and dt != torch.float32):
                continue
            if variant == "grad" and not (d.is_floating_point or d.is_complex):
                continue
            out.append((k, variant, d))
    return sorted(set(out), key=lambda x: (x[0], VARIANTS.index(x[1]), str(x[2])))


@_silenced
def run_task(plan: Plan, key: str, variant: str, dtype, cap: int | None = None) -> TaskResult:
    """Every capped sample of one (entry, variant, dtype), natively and through gems."""
    op = {entry_key(o): o for o in _op_db()}[key]
    cap = cap_for(dtype) if cap is None else cap
    ovs = plan.hits.get((key, variant), frozenset())
    decls = registry.declarations()
    families = sorted({decls[o].family for o in ovs if o in decls})
    t0 = time.perf_counter()
    try:
        grad = variant == "grad"
        samples, skipped = _samples(op, plan.device, dtype, cap, requires_grad=grad)
    except Exception as err:
        return TaskResult(key, variant, str(dtype), families, [], 0, time.perf_counter() - t0,
                          error=f"sample_inputs failed: {type(err).__name__}: {err}"[:300], hits=sorted(ovs))
    results = []
    with GemsProbe() as probe:
        for i, s in enumerate(samples):
            if not _variant_applies(op, variant, s, dtype):
                continue
            results.append(_run_sample(op, variant, s, i, dtype, families, probe))
    return TaskResult(key, variant, str(dtype), families, results, skipped, time.perf_counter() - t0,
                      hits=sorted(ovs))


def _native(op, variant, prep, seed):
    inp, args, kwargs, out_like, cot = prep
    torch.manual_seed(seed)
    return _run_variant(op, variant, inp, args, kwargs, out_like, cot)


def _run_sample(op, variant, sample, index, dtype, families, probe) -> SampleResult:
    prep = _prepare(op, variant, sample, dtype)
    if prep is None:
        return SampleResult(index, "ref_error", {}, {}, "native run of the sample raised")
    # native, twice with different seeds to tell random ops apart
    try:
        expected = _native(op, variant, _copy_prep(prep, variant, sample, dtype), 0)
        again = _native(op, variant, _copy_prep(prep, variant, sample, dtype), 1)
    except Exception as err:
        native_err = f"{type(err).__name__}: {str(err)[:200]}"
        got_err = _gems_only(op, variant, prep, families, probe)
        detail = f"native raised {native_err}; gems " + ("raised too" if got_err else "returned a value")
        return SampleResult(index, "ref_error", {}, {}, detail)
    random_op = not _same(expected.outputs, again.outputs)
    # inputs the call must leave alone (an in-place variant writes only its first input)
    watched = (prep[1], prep[2]) if variant == "inplace" else (prep[0], prep[1], prep[2])
    before = _detached(watched)
    snap = probe.snapshot()
    gemsops.only_enable(include=families)
    try:
        torch.manual_seed(0)
        got = _run_variant(op, variant, *prep)
        err = None
    except Exception as e:
        err = e
        tb = traceback.format_exc(limit=-3)
    finally:
        gemsops.disable()
    served, routed, errors = probe.delta(snap)
    served, routed = dict(served), dict(routed)
    if err is not None:
        return SampleResult(index, "failed", served, routed,
                            f"gems raised {type(err).__name__}: {str(err)[:300]}\n{tb[-600:]}")
    # gems' dropout draws its own Philox stream: under a fixed seed (OpInfo's wrapper_set_seed)
    # native repeats itself, yet gems' mask cannot equal torch's
    random_op = random_op or any(o in RNG_OVERLOADS for o in served)
    detail = ""
    try:
        if random_op:
            _compare_structure(got.outputs, expected.outputs)
        else:
            ref = _reference(op, variant, sample, dtype)
            try:
                _compare(got.outputs, expected.outputs, ref)
            except Mismatch:
                if ref is None or sum(served.values()) < 2:
                    raise
                spread = _rounding_spread(op, variant, sample, dtype, ref)
                if spread is None:
                    raise
                _compare(got.outputs, expected.outputs, ref, spread=spread)
                detail = "agreed within its rounding spread (an ill-conditioned chain of calls)"
        if expected.target is not None:
            _check_target(got, expected)
        _compare(_leaves(watched), _leaves(before), path="input after the call")
    except Mismatch as m:
        return SampleResult(index, "failed", served, routed, f"{m} [{_describe(sample)}]")
    if random_op:
        outcome = "random"
    elif sum(served.values()):
        outcome = "agreed"
    elif sum(routed.values()):
        outcome = "routed"
    else:
        outcome = "not_reached"
    return SampleResult(index, outcome, served, routed, detail)


def _copy_prep(prep, variant, sample, dtype):
    if variant == "grad":
        return prep  # leaves are reused; autograd.grad does not accumulate into them
    inp, args, kwargs, out_like, cot = prep
    return _detached(inp), _detached(args), _detached(kwargs), out_like, cot


def _gems_only(op, variant, prep, families, probe) -> bool:
    """Run the sample through gems when torch itself raised; True if gems raised too."""
    gemsops.only_enable(include=families)
    try:
        _run_variant(op, variant, *_copy_prep(prep, variant, None, None))
        return False
    except Exception:
        return True
    finally:
        gemsops.disable()


def _same(a, b) -> bool:
    try:
        _compare(a, b)
        return True
    except Mismatch:
        return False


def _compare_structure(a, b):
    al, bl = _leaves(a), _leaves(b)
    if len(al) != len(bl):
        raise Mismatch("structure differs")
    for x, y in zip(al, bl):
        if isinstance(y, torch.Tensor) and (
                not isinstance(x, torch.Tensor) or x.shape != y.shape or x.dtype != y.dtype):
            raise Mismatch(f"random op: got {getattr(x, 'shape', x)} {getattr(x, 'dtype', '')}, "
                           f"expected {tuple(y.shape)} {y.dtype}")


def _check_target(got, expected):
    res = got.outputs[0]
    tgt = got.target
    exp_res = expected.outputs[0]
    if isinstance(exp_res, torch.Tensor) and exp_res is expected.target and res is not tgt:
        raise Mismatch("in-place/out= call did not return its target tensor")
    if isinstance(exp_res, (tuple, list)) and isinstance(expected.target, (tuple, list)):
        if all(x is y for x, y in zip(exp_res, expected.target)) and not all(x is y for x, y in zip(res, tgt)):
            raise Mismatch("out= call did not return its out tensors")


def _reference(op, variant, sample, dtype, perturb=None):
    """The variant's outputs computed natively in float64 (None when that is not possible);
    ``perturb`` maps each float64 input first."""
    if not (dtype.is_floating_point or dtype.is_complex):
        return None
    try:
        tree = (sample.input, sample.args, sample.kwargs)
        ref_tree = _to_ref(tree)
        if perturb is not None:
            ref_tree = tree_map(perturb, ref_tree)
        if variant == "grad":
            for t, r in zip([x for x in _leaves(tree) if isinstance(x, torch.Tensor)],
                            [x for x in _leaves(ref_tree) if isinstance(x, torch.Tensor)]):
                if t.requires_grad:
                    r.requires_grad_(True)
            prep = _prepare(op, "grad", _Sample(*ref_tree), torch.float64, cot_dtype=dtype)
            if prep is None:
                return None
            return _run_variant(op, "grad", *prep).outputs
        inp, args, kwargs = ref_tree
        with torch.no_grad():
            out_like = None
            if variant == "out":
                out_like = tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t,
                                    op.op(_detached(inp), *_detached(args), **_detached(kwargs)))
            return _run_variant(op, variant, inp, args, kwargs, out_like).outputs
    except Exception:
        return None


def _rounding_spread(op, variant, sample, dtype, ref, draws=SPREAD_DRAWS):
    """Per leaf of ``ref``, element-wise, the largest move of the float64 result over
    ``draws`` runs on inputs whose every element is multiplied by 1 + u or 1 - u (random
    signs; u the dtype's unit roundoff, half an ulp); None where that cannot be computed
    (complex, or the runs fail). Full-size moves with random signs reach an element's
    worst case more often than uniform ones would."""
    if not dtype.is_floating_point:
        return None
    unit = torch.finfo(dtype).eps / 2
    ref_leaves = _leaves(ref)
    spread = [torch.zeros_like(r) if isinstance(r, torch.Tensor) and r.dtype == torch.float64 else None
              for r in ref_leaves]
    for d in range(draws):
        gen = torch.Generator(device="cpu").manual_seed(d)

        def jitter(x):
            if isinstance(x, torch.Tensor) and x.dtype == torch.float64:
                signs = torch.randint(0, 2, x.shape, generator=gen).to(torch.float64) * 2 - 1
                return x * (1 + unit * signs.to(x.device))
            return x

        moved = _reference(op, variant, sample, dtype, perturb=jitter)
        if moved is None:
            return None
        moved_leaves = _leaves(moved)
        if len(moved_leaves) != len(ref_leaves):
            return None
        for i, (m, r) in enumerate(zip(moved_leaves, ref_leaves)):
            if spread[i] is not None and isinstance(m, torch.Tensor) and m.shape == r.shape:
                # an element that leaves the finite range under input rounding: any value
                diff = torch.nan_to_num((m.to(r.dtype) - r).abs(), nan=math.inf)
                spread[i] = torch.maximum(spread[i], diff)
    return spread


@dataclasses.dataclass
class _Sample:
    input: object
    args: tuple
    kwargs: dict


def _describe(sample) -> str:
    def d(x):
        if isinstance(x, torch.Tensor):
            nc = "" if x.is_contiguous() else ",nc"
            return f"{str(x.dtype).removeprefix('torch.')}{list(x.shape)}{nc}"
        return repr(x)[:40]

    return ", ".join(
        [str(tree_map(d, sample.input))]
        + [str(tree_map(d, a)) for a in sample.args]
        + [f"{k}={tree_map(d, v)}" for k, v in sample.kwargs.items()]
    )[:300]


# -- summary -----------------------------------------------------------------------------------
class Summary:
    """Totals over task results; a table for the terminal, Markdown and JSON for reports."""

    def __init__(self, plan: Plan | None, dtypes, declared=None):
        # without a plan (results shipped from pytest-xdist workers) the reached overloads
        # are those of the tasks that ran
        self.declared = sorted(plan.declared if plan else (declared or registry.declarations()))
        self.reached = {o for ovs in plan.hits.values() for o in ovs} if plan else None
        self.device = plan.device if plan else (gemsops.VENDOR.device_type if gemsops.VENDOR else "cpu")
        self.trace_seconds = plan.trace_seconds if plan else None
        self.trace_errors = plan.trace_errors if plan else {}
        self.dtypes = [str(d) for d in dtypes]
        self.results: list[TaskResult] = []
        self.not_run: list = []  # tasks left out (time budget)
        self.note = ""  # extra limits the caller applied, for the summary

    def add(self, r: TaskResult) -> None:
        self.results.append(r)

    def totals(self) -> dict:
        c = collections.Counter()
        for r in self.results:
            c.update(r.counts())
        served_ovs = set()
        for r in self.results:
            for s in r.samples:
                if s.outcome in ("agreed", "random"):
                    served_ovs.update(o for o, n in s.served.items() if n)
        reached = self.reached if self.reached is not None else {o for r in self.results for o in r.hits}
        return {
            "overloads_declared": len(self.declared),
            "overloads_with_opinfo": len(reached & set(self.declared)),
            "overloads_served_and_agreed": len(served_ovs),
            "entries": len({r.entry for r in self.results}),
            "tasks": len(self.results),
            "samples": sum(len(r.samples) for r in self.results),
            **{k: c.get(k, 0) for k in OUTCOMES},
            "skipped_samples": sum(r.skipped for r in self.results),
            "task_errors": sum(1 for r in self.results if r.error),
            "tasks_not_run": len(self.not_run),
        }

    def per_overload(self) -> dict:
        rows = {ov: collections.Counter() for ov in self.declared}
        entries = collections.defaultdict(set)
        for r in self.results:
            for s in r.samples:
                for ov, n in s.served.items():
                    if ov in rows and n:
                        rows[ov]["served"] += 1
                        entries[ov].add(r.entry)
                        if s.outcome == "failed":
                            rows[ov]["failed"] += 1
                for ov, n in s.routed.items():
                    if ov in rows and n:
                        rows[ov]["routed"] += 1
                        entries[ov].add(r.entry)
                        if s.outcome == "failed" and not s.served.get(ov):
                            rows[ov]["failed"] += 1
        return {ov: {"entries": sorted(entries[ov]), "samples_served": c["served"],
                     "samples_routed": c["routed"], "samples_failed": c["failed"]} for ov, c in rows.items()}

    def limits(self) -> str:
        interp = _interpreter()
        parts = [f"{SAMPLE_CAP} samples per (entry, variant) in float32 and integer dtypes, "
                 f"{max(1, SAMPLE_CAP // 4)} in other dtypes",
                 "entries: all named after an overload they reach, "
                 + ("plus every other entry reaching one" if SECONDARY_PER_OVERLOAD < 0 else
                    f"topped up to {SECONDARY_PER_OVERLOAD} (entry, variant) pairs per overload")]
        if self.note:
            parts.append(self.note)
        if interp:
            parts.append(f"interpreter: samples over {INTERPRETER_MAX_NUMEL} elements skipped")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "device": self.device,
            "vendor": gemsops.vendor_name,
            "torch": torch.__version__,
            "triton": __import__("triton").__version__,
            "dtypes": self.dtypes,
            "limits": self.limits(),
            "trace_seconds": None if self.trace_seconds is None else round(self.trace_seconds, 2),
            "totals": self.totals(),
            "per_overload": self.per_overload(),
            "tasks": [
                {"entry": r.entry, "variant": r.variant, "dtype": r.dtype, "families": r.families,
                 "counts": dict(r.counts()), "skipped": r.skipped, "seconds": round(r.seconds, 3),
                 "error": r.error}
                for r in self.results
            ],
            "failures": [
                {"entry": r.entry, "variant": r.variant, "dtype": r.dtype, "sample": s.index,
                 "served": s.served, "routed": s.routed, "detail": s.detail}
                for r in self.results for s in r.samples if s.outcome == "failed"
            ],
            "ref_errors": [
                {"entry": r.entry, "variant": r.variant, "dtype": r.dtype, "sample": s.index, "detail": s.detail}
                for r in self.results for s in r.samples if s.outcome == "ref_error"
            ],
            "not_run": [list(map(str, t)) for t in self.not_run],
            "trace_errors": self.trace_errors,
        }

    def table(self) -> str:
        """Plain-text summary for the terminal."""
        t = self.totals()
        lines = [
            f"gemsops OpInfo agreement ({gemsops.vendor_name}, {self.device}, dtypes {', '.join(self.dtypes)})",
            f"limits: {self.limits()}",
            f"overloads declared {t['overloads_declared']}, reached by some OpInfo "
            f"{t['overloads_with_opinfo']}, served by gems and agreeing {t['overloads_served_and_agreed']}",
            f"entries {t['entries']}  tasks {t['tasks']}  samples {t['samples']}  " + "  ".join(
                f"{k} {t[k]}" for k in OUTCOMES) + f"  skipped {t['skipped_samples']}"
            + (f"  NOT RUN (time budget) {t['tasks_not_run']}" if t["tasks_not_run"] else ""),
            "",
            f"{'overload':<34} {'entries':>7} {'served':>7} {'routed':>7} {'failed':>7}",
        ]
        for ov, row in sorted(self.per_overload().items()):
            lines.append(f"{ov:<34} {len(row['entries']):>7} {row['samples_served']:>7} "
                         f"{row['samples_routed']:>7} {row['samples_failed']:>7}")
        fails = self.to_json()["failures"]
        if fails:
            lines.append("")
            lines.append(f"failures ({len(fails)}):")
            for f in fails[:40]:
                lines.append(f"  {f['entry']} [{f['variant']}, {f['dtype']}] sample {f['sample']}: "
                             + f["detail"].splitlines()[0][:200])
        return "\n".join(lines)

    def markdown(self) -> str:
        t = self.totals()
        lines = [
            f"# OpInfo agreement: {gemsops.vendor_name} on {self.device}",
            "",
            f"torch {torch.__version__}, Triton {__import__('triton').__version__}; dtypes {', '.join(self.dtypes)}.",
            f"Limits: {self.limits()}.",
            "",
            "| overloads declared | reached by OpInfo | served & agreed | entries | samples | "
            + " | ".join(OUTCOMES) + " |",
            "|" + "---|" * (5 + len(OUTCOMES)),
            f"| {t['overloads_declared']} | {t['overloads_with_opinfo']} | {t['overloads_served_and_agreed']} | "
            f"{t['entries']} | {t['samples']} | " + " | ".join(str(t[k]) for k in OUTCOMES) + " |",
            "",
            "| overload | OpInfo entries | samples served | routed to native | failed |",
            "|---|---|---|---|---|",
        ]
        for ov, row in sorted(self.per_overload().items()):
            ents = ", ".join(row["entries"][:6]) + (" ..." if len(row["entries"]) > 6 else "")
            lines.append(f"| `{ov}` | {ents or '(none)'} | {row['samples_served']} | {row['samples_routed']} | "
                         f"{row['samples_failed']} |")
        fails = self.to_json()["failures"]
        if fails:
            lines += ["", "## Failures", ""]
            for f in fails:
                first = f["detail"].splitlines()[0][:300].replace("|", "\\|")
                lines.append(f"- `{f['entry']}` {f['variant']} {f['dtype']} sample {f['sample']}: {first}")
        return "\n".join(lines) + "\n"


PROPERTY = "gems_opinfo"  # pytest user property carrying one TaskResult.to_dict()
SUMMARY_LINE = "gems_summary_line"  # a user property printed as is in the summary


def register_summary(config) -> None:
    """Have this (single-process) pytest session end with ``terminal_summary``."""

    class _Reporter:
        def pytest_terminal_summary(self, terminalreporter):
            terminal_summary(terminalreporter)

    if config.pluginmanager.get_plugin("gems-opinfo-summary") is None:
        config.pluginmanager.register(_Reporter(), name="gems-opinfo-summary")

# What the pytest run (CI, tests/ops/test_opinfo.py) covers: float32 (and integer-only
# entries in their own dtype) over every planned (entry, variant); the other floating
# dtypes over the plain-call variant of the entries named after an overload only.
PYTEST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PYTEST_NOTE = "float16/bfloat16: plain-call variant of the entries named after an overload only"


def pytest_tasks(plan: Plan) -> list:
    """The (entry, variant, dtype) tasks of the pytest run (see ``PYTEST_DTYPES``)."""
    return [t for t in tasks_for(plan, PYTEST_DTYPES)
            if t[2] == torch.float32 or not t[2].is_floating_point
            or (t[1] == "op" and (t[0], t[1]) in plan.primary)]


def terminal_summary(terminalreporter, dtypes=PYTEST_DTYPES, note=PYTEST_NOTE) -> None:
    """Print (and with ``GEMS_OPINFO_REPORT=<folder>`` write) the session's summary.

    Reads the task results from the test reports' user properties, so it works in the
    pytest-xdist controller (call it from a ``pytest_terminal_summary`` hook in
    tests/conftest.py) as well as in a single process; prints once per session.
    """
    config = terminalreporter.config
    if getattr(config, "_gems_opinfo_done", False):
        return
    tasks, lines = [], []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            for name, value in getattr(rep, "user_properties", ()):
                if name == PROPERTY:
                    tasks.append(TaskResult.from_dict(value))
                elif name == SUMMARY_LINE:
                    lines.append(value)
    config._gems_opinfo_done = True
    if lines:
        terminalreporter.write_sep("=", "gemsops coverage")
        for line in lines:
            terminalreporter.write_line(line)
    if not tasks:
        return
    summary = Summary(None, dtypes or sorted({t.dtype for t in tasks}))
    summary.note = note
    for t in sorted(tasks, key=lambda t: (t.entry, VARIANTS.index(t.variant), t.dtype)):
        summary.add(t)
    terminalreporter.write_sep("=", "gemsops OpInfo summary")
    terminalreporter.write_line(summary.table())
    out = os.environ.get("GEMS_OPINFO_REPORT")
    if out:
        write_report(summary, out)
        terminalreporter.write_line(f"wrote {out}/opinfo.json and opinfo.md")


def write_report(summary: Summary, folder, stem: str = "opinfo") -> None:
    """``<folder>/<stem>.json`` (everything, failures included) and ``<stem>.md`` (tables)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{stem}.json"), "w") as f:
        json.dump(summary.to_json(), f, indent=1, default=str)
    with open(os.path.join(folder, f"{stem}.md"), "w") as f:
        f.write(summary.markdown())


def run_all(device: str, dtypes, time_budget: float | None = None, progress=None) -> Summary:
    """Trace, plan and run every task for ``dtypes``; stop starting tasks after ``time_budget`` s."""
    plan = trace(device)
    summary = Summary(plan, dtypes)
    start = time.perf_counter()
    for key, variant, dt in tasks_for(plan, dtypes):
        if time_budget is not None and time.perf_counter() - start > time_budget:
            summary.not_run.append((key, variant, dt))
            continue
        r = run_task(plan, key, variant, dt)
        summary.add(r)
        if progress:
            progress(r)
    return summary


def main(argv=None) -> int:
    global SAMPLE_CAP, SECONDARY_PER_OVERLOAD
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=gemsops.VENDOR.device_type if gemsops.VENDOR else "cpu")
    p.add_argument("--dtype", action="append", help="float32 (default), float16, bfloat16, float64; repeatable")
    p.add_argument("--cap", type=int, help=f"samples per (entry, variant) in float32 (default {SAMPLE_CAP})")
    p.add_argument("--secondary", type=int, help="other entries per overload; -1 for all")
    p.add_argument("--time-budget", type=float, help="seconds after which no further task starts")
    p.add_argument("--out", help="folder for opinfo-<dtypes>.json and .md")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    if a.cap is not None:
        SAMPLE_CAP = a.cap
    if a.secondary is not None:
        SECONDARY_PER_OVERLOAD = a.secondary
    dtypes = [getattr(torch, d) for d in (a.dtype or ["float32"])]

    def progress(r):
        c = r.counts()
        flag = "FAIL" if c.get("failed") else "ok"
        if a.verbose or flag == "FAIL":
            print(f"{flag:4} {r.entry} [{r.variant}, {r.dtype}] {dict(c)} {r.seconds:.2f}s", flush=True)

    summary = run_all(a.device, dtypes, a.time_budget, progress)
    print(summary.table())
    if a.out:
        stem = "opinfo-" + "-".join(str(d).removeprefix("torch.") for d in dtypes)
        write_report(summary, a.out, stem)
        print(f"wrote {a.out}/{stem}.json and {stem}.md")
    return 1 if summary.totals()["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

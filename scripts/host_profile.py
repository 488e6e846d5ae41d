"""Where a gems call's host time goes: per-call wall time and a cProfile table per case.

    PYTHONPATH=src python scripts/host_profile.py [--calls N]

For finding host overhead on a GPU machine (the CPU proxy is ``python -m
benchmark.host_overhead --skip-launches``). Prints, per case, the wall time per call of a
loop of calls and the functions with the most own time under cProfile.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import time

import torch
import torch.nn.functional as F

import gemsops
from gemsops.runtime import launch


def per_call_us(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def cases():
    dev, bf = "cuda", torch.bfloat16
    a, b = torch.randn(16, device=dev, dtype=bf), torch.randn(16, device=dev, dtype=bf)
    x, w = torch.randn(4, 16, device=dev, dtype=bf), torch.randn(16, device=dev, dtype=bf)
    hq, hk, d, block, ctx = 32, 8, 128, 16, 32768
    nblk = ctx // block
    q = torch.randn(1, hq, d, device=dev, dtype=bf)
    kc = torch.randn(nblk, block, hk, d, device=dev, dtype=bf)
    vc = torch.randn_like(kc)
    table = torch.randperm(nblk, device=dev).view(1, nblk).to(torch.int32)
    lens = torch.full((1,), ctx, dtype=torch.int32, device=dev)
    yield "native add 16", None, lambda: torch.add(a, b)
    yield "launch only (add's Bound)", None, _bound_only(a, b)
    yield "gemsops.ops.add 16", None, lambda: gemsops.ops.add(a, b)
    yield "torch.add 16 in use_gems", ["add"], lambda: torch.add(a, b)
    yield "native rms_norm 4x16", None, lambda: F.rms_norm(x, (16,), w, 1e-6)
    yield "F.rms_norm 4x16 in use_gems", ["rms_norm", "_fused_rms_norm"], lambda: F.rms_norm(x, (16,), w, 1e-6)
    yield "gemsops.ops.paged_attention B1 L32768", None, lambda: gemsops.ops.paged_attention(
        q, kc, vc, table, lens, scale=1 / math.sqrt(d))


def _bound_only(a, b):
    import importlib

    pw = importlib.import_module("gemsops.ops._pointwise")
    add_mod = importlib.import_module("gemsops.ops.add")
    key = ((a.dtype, False), (b.dtype, False))
    plan = add_mod._plain._plans.get(key) or add_mod._plain._plan(key, (a, b))
    flat = plan[5][0]
    out = torch.empty_like(a)
    n = a.numel()
    return lambda: flat(((n + pw.BLOCK - 1) // pw.BLOCK,), out, a, b, 0, 0, n)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--top", type=int, default=14)
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, launch hooks unset: {launch._hooks_unset()}")
    for name, include, fn in cases():
        ctx = gemsops.use_gems(include=include) if include else _null()
        with ctx:
            us = per_call_us(fn, args.calls)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.calls):
                fn()
            prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
        print(f"\n=== {name}: {us:.1f} us/call")
        print("\n".join(line for line in s.getvalue().splitlines()[6:] if line.strip()))
    fast = {k.fn.__name__: lau.fast for k, lau in launch._LAUNCHERS.values()}
    print("\nlaunchers on the lean path:", fast)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()

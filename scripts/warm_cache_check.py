"""Does a process that starts with a warm tuning cache run as fast as one that tuned itself?

    GEMS_CACHE_DIR=/tmp/cache python scripts/warm_cache_check.py   # run twice

Each run times, for a few tuned ops on LLM shapes: the wall time of the very first call
(planning, tuning or the disk lookup, kernel load), then the steady-state ``do_bench``
median, and prints how many configs this process benchmarked and how many it read from
the disk cache. On the first run (empty cache) the first calls tune; on the second, the
first calls should benchmark nothing, and the steady-state times should match the first run.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
import triton

import gemsops
from gemsops.runtime import tuner


def cases():
    bf = dict(device="cuda", dtype=torch.bfloat16)
    a, w = torch.randn(4096, 4096, **bf), torch.randn(14336, 4096, **bf)
    x, g = torch.randn(4096, 4096, **bf), torch.randn(4096, **bf)
    q = torch.randn(1, 32, 4096, 128, **bf)
    yield "linear 4096x14336x4096", lambda: F.linear(a, w)
    yield "linear 16x14336x4096", lambda: F.linear(a[:16], w)
    yield "rms_norm 4096x4096", lambda: F.rms_norm(x, (4096,), g, 1e-6)
    yield "softmax 4096x4096", lambda: torch.softmax(x, -1)
    yield "sdpa causal B1 H32 S4096 D128", lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True)


def main() -> None:
    print(f"tuning cache: {tuner.cache_dir()}")
    print("| op | first call ms | steady-state ms |")
    print("|---|---|---|")
    with gemsops.use_gems():
        for name, fn in cases():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            first = (time.perf_counter() - t0) * 1e3
            steady = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            print(f"| {name} | {first:.2f} | {steady:.3f} |", flush=True)
    print(f"configs benchmarked in this process: {tuner.stats.benchmarks_run}, "
          f"read from the disk cache: {tuner.stats.disk_hits}")


if __name__ == "__main__":
    main()

"""Profile the host path of a tiny gems op (where the microseconds go): cProfile, sorted by tottime."""
import cProfile
import pstats
import sys
import time

import torch

import gemsops


def per_call_us(fn, n=5000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def main():
    a = torch.randn(16, device="cuda")
    x2 = torch.randn(4, 16, device="cuda")
    cases = {
        "add": lambda: torch.add(a, a),
        "softmax": lambda: torch.softmax(x2, -1),
        "sum": lambda: torch.sum(x2, -1),
    }
    for name, fn in cases.items():
        nat = per_call_us(fn)
        gemsops.enable()
        g = per_call_us(fn)
        ex = per_call_us(lambda: gemsops.ops.add(a, a)) if name == "add" else float("nan")
        print(f"{name}: native {nat:.1f} us, enable {g:.1f} us, explicit {ex:.1f} us")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            fn()
        prof.disable()
        gemsops.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()

"""Per-call host cost of a tiny op: native torch against gems (enable and use_gems)."""
import sys
import time

import torch

import gemsops


def per_call_us(fn, n=20000):
    for _ in range(100):
        fn()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return (time.perf_counter() - t) / n * 1e6


def main():
    dev = gemsops.VENDOR.device_type
    a = torch.randn(16, device=dev)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    native = per_call_us(lambda: torch.add(a, a), n)
    explicit = per_call_us(lambda: gemsops.ops.add(a, a), n)
    gemsops.enable()
    enabled = per_call_us(lambda: torch.add(a, a), n)
    gemsops.disable()
    with gemsops.use_gems():
        scoped = per_call_us(lambda: torch.add(a, a), n)
    print(f"tiny add per call: native {native:.1f} us, gems enable {enabled:.1f} us "
          f"({enabled / native:.2f}x), use_gems {scoped:.1f} us, gemsops.ops.add {explicit:.1f} us")


if __name__ == "__main__":
    main()

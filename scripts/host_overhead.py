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
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20000
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


def diagnose():
    """Where the time goes: the pointwise host code alone, and whether the lean launcher is in use."""
    from gemsops.ops import _pointwise as pw

    dev = gemsops.VENDOR.device_type
    a = torch.randn(16, device=dev)
    gemsops.ops.add(a, a)
    print(f"lean launcher active: {pw._launch_flat.fast}, compiled entries: {len(pw._launch_flat.compiled)}")
    real = pw._launch_flat
    pw._launch_flat = lambda *args, **kw: None
    print(f"gemsops.ops.add host code only (launch stubbed): {per_call_us(lambda: gemsops.ops.add(a, a)):.1f} us")
    pw._launch_flat = real
    out = torch.empty_like(a)
    k = pw._pointwise_flat_kernel
    print(f"torch.empty_like alone: {per_call_us(lambda: torch.empty_like(a)):.1f} us")
    print(f"raw Triton launch (JITFunction.run): {per_call_us(lambda: real.kernel[(1,)](out, a, a, 0, 16, FN=gemsops.ops.add.__wrapped__.__globals__['_add'], NIN=2, K0=1, K1=1, K2=0, C0=None, C1=None, C2=None, INT64=False, BLOCK=1024)):.1f} us")
    print(f"lean launch alone: {per_call_us(lambda: real((1,), out, a, a, 0, 16, FN=gemsops.ops.add.__wrapped__.__globals__['_add'], NIN=2, K0=1, K1=1, K2=0, C0=None, C1=None, C2=None, INT64=False, BLOCK=1024)):.1f} us")
    print(f"lean launcher still active: {real.fast}")


if __name__ == "__main__" and "--diagnose" in sys.argv:
    diagnose()

"""Where an eager decode step's host time goes, per user-level torch call.

    PYTHONPATH=src:. python scripts/decode_replay.py

Captures every torch call of one decode step of the end-to-end benchmark's model (the
``F.linear``, ``Tensor.__mul__``, ``torch.cat``... the model's Python makes, through a
``TorchFunctionMode``), then replays each distinct call back to back: natively, through
gems (``enable()``) and with torch's kernels behind Python forwarding
(``benchmark.harness.python_forwarding``). Prints host us per call and, per call, how
much gems adds over forwarding and over native in one step, largest first. On a GPU
machine (CUDA tensors, the quick model); without one, a tiny model on the CPU under the
interpreter vendor (only the shape of the table means anything there).
"""
from __future__ import annotations

import collections
import statistics
import time

import torch
from torch.overrides import TorchFunctionMode

import gemsops
from benchmark import e2e, harness
from gemsops.runtime import registry

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# tensor metadata reads: no kernel behind them, identical in every mode
_METADATA = {"__get__", "size", "dim", "stride", "is_contiguous", "__len__", "__getitem__", "data_ptr"}


class _Capture(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in _METADATA:
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def _sync():
    if CUDA:
        torch.cuda.synchronize()


def _label(func, args) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", str(func))
    shapes = ",".join("x".join(map(str, a.shape)) for a in args if isinstance(a, torch.Tensor))
    return f"{name}({shapes[:40]})"


def host_us(fn, calls: int) -> float:
    """Median over 5 loops of the wall time per call of ``calls`` back-to-back calls."""
    for _ in range(20):
        fn()
    _sync()
    loops = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        loops.append((time.perf_counter() - t0) / calls * 1e6)
        _sync()
    return statistics.median(loops)


def main() -> None:
    cfg = e2e.LlamaConfig() if CUDA else e2e.LlamaConfig(vocab=256, hidden=64, layers=2, heads=4, kv_heads=2,
                                                         intermediate=128, eps=1e-5, rope_theta=1e4)
    calls = 300 if CUDA else 5
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = e2e.Llama(cfg, max_len=640)
    model = model.init_random().to(torch.bfloat16).eval()
    with torch.inference_mode():
        session = e2e.Session(model, 1, 512)
        session.start_decode(session.prefill())
        for _ in range(3):
            session.decode_step()
        _sync()
        with _Capture() as capture:
            session.decode_step()
        _sync()
        groups: dict = {}
        for func, args, kwargs in capture.calls:
            entry = groups.setdefault(_label(func, args), [0, func, args, kwargs])
            entry[0] += 1
        print(f"{len(capture.calls)} calls in one decode step, {len(groups)} distinct")
        overloads = sorted(registry.declarations())
        rows = []
        for label, (count, func, args, kwargs) in groups.items():
            def call(func=func, args=args, kwargs=kwargs):
                return func(*args, **kwargs)
            native = host_us(call, calls)
            gemsops.enable()
            try:
                gems = host_us(call, calls)
            finally:
                gemsops.disable()
            with harness.python_forwarding(overloads):
                forwarding = host_us(call, calls)
            native = min(native, host_us(call, calls))
            rows.append((label, count, native, forwarding, gems))
    rows.sort(key=lambda r: -(r[4] - r[3]) * r[1])
    print(f"{'call':60s} {'n':>3s} {'native':>7s} {'fwd':>7s} {'gems':>7s} {'gems-fwd':>9s} {'gems-nat':>9s}")
    totals = collections.Counter()
    for label, count, native, forwarding, gems in rows:
        totals.update(native=native * count, forwarding=forwarding * count, gems=gems * count)
        print(f"{label:60s} {count:3d} {native:7.1f} {forwarding:7.1f} {gems:7.1f} "
              f"{(gems - forwarding) * count:9.0f} {(gems - native) * count:9.0f}")
    print("one step, sum of the replayed calls (us):", {k: round(v) for k, v in totals.items()})


if __name__ == "__main__":
    main()

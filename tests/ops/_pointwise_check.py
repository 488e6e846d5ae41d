"""Shared checks for the pointwise op tests: run a torch call through gems, compare with torch."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import gemsops
from gemsops.ops import _pointwise
from gemsops.runtime import launch
from gemsops.runtime.oplog import read_log
from tests.util import DEVICE, assert_close, reference

INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def make(*shape, dtype=torch.float32, specials=False, low=-5, high=6, positive=False):
    """A small test tensor; ``specials`` puts NaN, +-inf and +-0 in the first elements."""
    if dtype == torch.bool:
        return torch.rand(*shape, device=DEVICE) > 0.5
    if dtype in INTS:
        low = max(low, 0) if dtype == torch.uint8 else low
        return torch.randint(low, high, shape, dtype=dtype, device=DEVICE)
    x = torch.randn(*shape, dtype=torch.float32, device=DEVICE)
    if positive:
        x = x.abs() + 0.1
    if specials and x.numel() >= 5:
        flat = x.view(-1)
        flat[:5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    return x.to(dtype)


class _CountLaunches:
    """Counts the generator's kernel launches (the op log records calls, also those that fall back).

    Every launch passes ``Bound.__call__`` or, for a plan's prepared launch, ``Prepared.__call__``
    or ``Prepared.planned`` (which go on to ``Bound.__call__`` only the first time, to
    compile); the count keeps those of the generator's two kernels, each launch once.
    """

    def __init__(self):
        self.count = 0
        self.inside_prepared = 0
        self.saved = launch.Bound.__call__, launch.Prepared.__call__, launch.Prepared.planned
        self.kernels = (_pointwise._pointwise_flat_kernel, _pointwise._pointwise_strided_kernel)

    def _ours(self, bound):
        return any(bound.launcher.kernel is k for k in self.kernels)

    def __enter__(self):
        bound_call, prepared_call, planned_call = self.saved

        def counted(bound, grid, *args):
            if not self.inside_prepared and self._ours(bound):
                self.count += 1
            return bound_call(bound, grid, *args)

        def counting(call):
            def counted_prepared(prepared, *head):
                if not self.inside_prepared and self._ours(prepared.bound):
                    self.count += 1
                self.inside_prepared += 1
                try:
                    return call(prepared, *head)
                finally:
                    self.inside_prepared -= 1
            return counted_prepared

        launch.Bound.__call__ = counted
        launch.Prepared.__call__ = counting(prepared_call)
        launch.Prepared.planned = counting(planned_call)
        return self

    def __exit__(self, *exc):
        launch.Bound.__call__, launch.Prepared.__call__, launch.Prepared.planned = self.saved


def run_gems(include, fn, *args, launches=False, **kwargs):
    """``fn(*args, **kwargs)`` inside ``use_gems(include)``; (result, overloads logged[, launches])."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ops.log"
        with _CountLaunches() as counter, gemsops.use_gems(include=include, record=True, path=path):
            result = fn(*args, **kwargs)
        logged = [op.removeprefix("aten::") for _, op, _ in read_log(path)] if path.exists() else []
    return (result, logged, counter.count) if launches else (result, logged)


def check(include, fn, *args, exact=False, served=True, scale=1.0, **kwargs):
    """gems agrees with torch: dtype and shape as torch's kernel, values as a float64 reference.

    ``exact`` compares with torch's own result bit for bit (NaN equal); ``served`` asserts
    that an overload of ``include`` ran through gems (else: that none did, torch ran).
    """
    clone = lambda v: v.clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
    native = fn(*[clone(a) for a in args], **kwargs)
    got, logged, launched = run_gems(include, fn, *[clone(a) for a in args], launches=True, **kwargs)
    families = {include} if isinstance(include, str) else set(include)
    hit = [op for op in logged if op.split(".")[0] in families or op.split(".")[0].rstrip("_") in families
           or op in families]
    if served:
        assert hit and (launched or got.numel() == 0), f"{include} did not run through gems (log: {logged})"
    else:
        assert not launched, f"expected torch's kernel, gems ran {hit}"
    assert got.dtype == native.dtype and got.shape == native.shape, (got.dtype, native.dtype, got.shape)
    if exact or not got.is_floating_point():
        torch.testing.assert_close(got, native, atol=0, rtol=0, equal_nan=True)
    else:
        ref = reference(fn, *args, out_dtype=got.dtype, **kwargs)
        assert_close(got, ref, scale=scale, equal_nan=True)
    return got

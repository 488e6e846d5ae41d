"""Shared comparison helpers: gems against torch's own kernels, reference in float64."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gemsops

DEVICE = gemsops.VENDOR.device_type
ON_GPU = DEVICE == "cuda"
INTERPRETER = gemsops.VENDOR.interpreter

# Floating dtypes the tests sweep; bf16 is included on the interpreter too (its casts
# truncate instead of rounding, hence the 1-ulp-wide bf16 tolerance).
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# Tolerances for results computed in fp32 (opmath) and rounded to the output dtype,
# compared with a float64 reference rounded the same way.
TOL = {
    torch.float64: dict(atol=1e-9, rtol=1e-9),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-3, rtol=1e-3),
    torch.bfloat16: dict(atol=1e-2, rtol=1.6e-2),
}


def tol(dtype, scale: float = 1.0) -> dict:
    """Tolerance for ``dtype``; ``scale`` widens it for long reductions or matmuls."""
    t = TOL.get(dtype, dict(atol=0, rtol=0))
    return dict(atol=t["atol"] * scale, rtol=t["rtol"] * scale)


def to_ref(x):
    """Upcast floating tensors (and tensors inside lists) to float64 for a reference run."""
    if isinstance(x, torch.Tensor):
        return x.detach().double() if x.is_floating_point() else x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(to_ref(v) for v in x)
    return x


def reference(fn, *args, out_dtype=None, **kwargs):
    """``fn`` run natively in float64 on upcast inputs, then cast to ``out_dtype``."""
    with torch.no_grad():
        ref = fn(*to_ref(args), **kwargs)
    if out_dtype is not None and isinstance(ref, torch.Tensor) and ref.is_floating_point():
        ref = ref.to(out_dtype)
    return ref


def randn(*shape, dtype=torch.float32, device=None, **kw):
    return torch.randn(*shape, dtype=dtype, device=device or DEVICE, **kw)


def assert_close(actual, expected, dtype=None, scale: float = 1.0, **kw):
    """``torch.testing.assert_close`` with the per-dtype tolerance of ``dtype``."""
    dtype = dtype or (actual.dtype if isinstance(actual, torch.Tensor) else None)
    opts = tol(dtype, scale) if dtype in TOL else {}
    opts.update(kw)
    torch.testing.assert_close(actual, expected, **opts)


class SeenOps(TorchDispatchMode):
    """A dispatch mode that records the name of every aten op it sees (``.ops``)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def check_composite_under_forward_ad_and_fake(include, fn, x, *others):
    """``fn(x, *others)`` under ``use_gems(include)`` still carries a forward-mode tangent
    of ``x`` (the autograd-level host function left it to torch's composite, a kernel would
    drop it) and runs on fake tensors (tracing sees torch's decomposition)."""
    import torch.autograd.forward_ad as fwAD
    from torch._subclasses.fake_tensor import FakeTensorMode

    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        want = fwAD.unpack_dual(fn(fwAD.make_dual(x, tangent), *others)).tangent
    with gemsops.use_gems(include=include):
        with fwAD.dual_level():
            got = fwAD.unpack_dual(fn(fwAD.make_dual(x, tangent), *others)).tangent
        with FakeTensorMode() as mode:
            fake = fn(mode.from_tensor(x), *(mode.from_tensor(o) for o in others))
    assert got is not None
    assert_close(got, want, scale=4)
    assert fake.shape == fn(x, *others).shape

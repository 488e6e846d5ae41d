"""Gated activations: ``silu_and_mul`` and ``gelu_and_mul`` (vLLM semantics), with backward.

``x [..., 2d] -> act(x[..., :d]) * x[..., d:]``, computed in fp32 and rounded once. A
program takes BLOCK columns of one row, and consecutive programs take consecutive column
blocks of a row, so the GPU streams through memory in order (H100, bf16, us, with rows as
the fastest grid axis / now / Liger-Kernel's kernel on separate gate and up tensors:
4096x28672 127.0 / 120.7 / 122.7, 16384x16384 275.1 / 266.0 / 270.3). Rows are addressed with
one stride, so slices of a larger buffer need no copy. tanh is written through sigmoid
(``tanh(z) = 2 sigmoid(2z) - 1``) because Triton has no portable tanh outside libdevice.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import Plans, Tuner, bucket, on_vendor_device
from ._rows import launcher, rows_2d
from ._common import allocation_stand_in, cdiv, default_strides, needs_int64, planned_output

__all__ = ["silu_and_mul", "gelu_and_mul"]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SILU, GELU, GELU_TANH = 0, 1, 2  # constants below: 1/sqrt(2), 1/sqrt(2 pi), sqrt(2/pi), 0.044715


@triton.jit
def _act(a, ACT: tl.constexpr):
    if ACT == 0:
        return a * tl.sigmoid(a)
    elif ACT == 1:
        return 0.5 * a * (1.0 + tl.erf(a * 0.7071067811865476))
    else:
        z = 0.7978845608028654 * (a + 0.044715 * a * a * a)
        return 0.5 * a * (1.0 + (2.0 * tl.sigmoid(2.0 * z) - 1.0))


@triton.jit
def _act_grad(a, ACT: tl.constexpr):
    if ACT == 0:
        s = tl.sigmoid(a)
        return s * (1.0 + a * (1.0 - s))
    elif ACT == 1:
        return 0.5 * (1.0 + tl.erf(a * 0.7071067811865476)) + a * 0.3989422804014327 * tl.exp(-0.5 * a * a)
    else:
        z = 0.7978845608028654 * (a + 0.044715 * a * a * a)
        t = 2.0 * tl.sigmoid(2.0 * z) - 1.0
        return 0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * a * a)


@triton.jit
def _gated_fwd_kernel(out, x, M, D, sx, so, ACT: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
    blocks = tl.cdiv(D, BLOCK)
    row = tl.program_id(0) // blocks
    if INT64:
        row = row.to(tl.int64)
    cols = (tl.program_id(0) % blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    a = tl.load(x + row * sx + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(x + row * sx + D + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + row * so + cols, (_act(a, ACT) * b).to(out.dtype.element_ty), mask=mask)


@triton.jit
def _gated_bwd_kernel(dx, g, x, M, D, sdx, sg, sx, ACT: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
    blocks = tl.cdiv(D, BLOCK)
    row = tl.program_id(0) // blocks
    if INT64:
        row = row.to(tl.int64)
    cols = (tl.program_id(0) % blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    a = tl.load(x + row * sx + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(x + row * sx + D + cols, mask=mask, other=0.0).to(tl.float32)
    gv = tl.load(g + row * sg + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx + row * sdx + cols, (gv * b * _act_grad(a, ACT)).to(dx.dtype.element_ty), mask=mask)
    tl.store(dx + row * sdx + D + cols, (gv * _act(a, ACT)).to(dx.dtype.element_ty), mask=mask)


_L_gated_bwd_kernel = launcher(_gated_bwd_kernel)
_L_gated_fwd_kernel = launcher(_gated_fwd_kernel)
_FWD = Tuner("silu_and_mul_fwd", kernels=[_gated_fwd_kernel, _act])
_BWD = Tuner("silu_and_mul_bwd", kernels=[_gated_bwd_kernel, _act, _act_grad])
_DEFAULT = {"BLOCK": 1024, "num_warps": 4}


def _torch_gated(x, act):
    d = x.shape[-1] // 2
    a, b = x[..., :d], x[..., d:]
    if act == SILU:
        return torch.nn.functional.silu(a) * b
    return torch.nn.functional.gelu(a, approximate="tanh" if act == GELU_TANH else "none") * b


def _cfg(tuner, d, m, launch):
    return tuner.choose((bucket(d), bucket(min(m, 4096))), launch) or _DEFAULT


# (shape, strides, dtype, device, act) -> (prepared launch, output's allocation stand-in, shape):
# a repeated call (every layer of every decode step) skips the checks, tuning and views
_PLANS = Plans()


def _forward(x, act, out=None):
    if out is None:
        plan = _PLANS.get((x.shape, x.stride(), x.dtype, x.device, act))
        if plan is not None:
            prepared, out_like, out_shape = plan
            out = planned_output(out_like, out_shape, default_strides(out_shape), x.dtype, x)
            prepared(out, x)
            return out
    d = x.shape[-1] // 2 if x.dim() else 0
    if not (on_vendor_device(x, out) and x.dtype in KERNEL_DTYPES and x.dim() >= 1 and x.shape[-1] % 2 == 0) \
            or (out is not None and (out.dtype != x.dtype or out.shape != x.shape[:-1] + (d,))):
        res = _torch_gated(x, act)
        if out is None:
            return res
        return out.copy_(res)
    if out is None:
        out = torch.empty(x.shape[:-1] + (d,), dtype=x.dtype, device=x.device)
    m = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if m == 0 or d == 0:
        return out
    xv, sx = rows_2d(x, 2 * d)
    ov, so = rows_2d(out, d)

    int64 = needs_int64(ov, xv)

    def launch(cfg):
        _L_gated_fwd_kernel(
            (m * cdiv(d, cfg["BLOCK"]),), ov, xv, m, d, sx, so, ACT=act, INT64=int64, BLOCK=cfg["BLOCK"],
            num_warps=cfg["num_warps"])

    cfg = _cfg(_FWD, d, m, launch)
    launch(cfg)
    if ov.data_ptr() != out.data_ptr() or ov.shape != out.shape:
        out.copy_(ov.view(out.shape))
    elif xv is x and so == d:
        bound = _L_gated_fwd_kernel.bind(ACT=act, INT64=int64, BLOCK=cfg["BLOCK"], num_warps=cfg["num_warps"])
        _PLANS.keep((x.shape, x.stride(), x.dtype, x.device, act),
                    (bound.prepare((m * cdiv(d, cfg["BLOCK"]),), (m, d, sx, so)).planned, allocation_stand_in(out),
                     out.shape))
    return out


def _backward(g, x, act):
    d = x.shape[-1] // 2
    m = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not (on_vendor_device(x, g) and x.dtype in KERNEL_DTYPES and g.dtype == x.dtype):
        with torch.enable_grad():
            xd = x.detach().requires_grad_()
            (dx,) = torch.autograd.grad(_torch_gated(xd, act), xd, g)
        return dx
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if m == 0 or d == 0:
        return dx.zero_()
    xv, sx = rows_2d(x, 2 * d)
    gv, sg = rows_2d(g, d)

    def launch(cfg):
        _L_gated_bwd_kernel(
            (m * cdiv(d, cfg["BLOCK"]),), dx, gv, xv, m, d, 2 * d, sg, sx, ACT=act, INT64=needs_int64(dx, xv, gv), BLOCK=cfg["BLOCK"],
            num_warps=cfg["num_warps"])

    launch(_cfg(_BWD, d, m, launch))
    return dx


class _GatedFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, act):
        ctx.save_for_backward(x)
        ctx.act = act
        return _forward(x, act)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _backward(g, x, ctx.act), None


def _run(x, act, out):
    if out is None and torch.is_grad_enabled() and x.requires_grad:
        return _GatedFn.apply(x, act)
    return _forward(x, act, out)


def silu_and_mul(x, out=None):
    """``silu(x[..., :d]) * x[..., d:]`` with ``d = x.shape[-1] // 2``; differentiable when ``out`` is None."""
    return _run(x, SILU, out)


def gelu_and_mul(x, approximate="none", out=None):
    """``gelu(x[..., :d], approximate) * x[..., d:]`` (approximate "none" or "tanh")."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu_and_mul: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _run(x, GELU if approximate == "none" else GELU_TANH, out)

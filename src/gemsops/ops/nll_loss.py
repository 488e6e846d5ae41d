"""nll_loss_forward / nll_loss_backward (weight, ignore_index, reduction none/mean/sum; 1-D and 2-D
input), so that ``F.cross_entropy`` (log_softmax + nll_loss) runs through gems.

The reduced forms sum in one program, in a fixed order (deterministic, like torch's CUDA
kernel); the per-sample loss count is small next to the [N, C] input. A target outside
[0, C) other than ignore_index reads nothing and gives a NaN loss and gradient row (torch
raises or asserts; checking on the host would cost a device sync per call).
"""
import torch
import triton
import triton.language as tl

from ..runtime import Tuner, Unsupported, declare, launcher, on_vendor_device, with_fallback
from ._common import cdiv, kernel_dtype_ok, next_pow2

__all__ = ["nll_loss_forward", "nll_loss_backward"]

NONE, MEAN, SUM = 0, 1, 2


@triton.jit
def _pick(x, target, weight, offs, mask, C, sxn, sxc, st, ignore_index, HAS_W: tl.constexpr):
    """(-x[n, t] * w[t], w[t], counted) per sample, zero where ignored, NaN for a target
    outside [0, C) (torch raises there; nothing is read out of bounds)."""
    t = tl.load(target + offs * st, mask=mask, other=ignore_index)
    live = mask & (t != ignore_index)
    in_range = (t >= 0) & (t < C)
    valid = live & in_range
    t = tl.where(valid, t, 0)
    if HAS_W:
        w = tl.load(weight + t, mask=valid, other=0).to(tl.float32)
    else:
        w = valid.to(tl.float32)
    v = tl.load(x + offs * sxn + t * sxc, mask=valid, other=0).to(tl.float32)
    loss = tl.where(live & ~in_range, float("nan"), -v * w)
    return loss, w, valid.to(tl.float32)


@triton.jit
def _nll_fwd(x, target, weight, out, tw, N, C, sxn, sxc, st, ignore_index,
             HAS_W: tl.constexpr, REDUCTION: tl.constexpr, IGNORED_MEAN_ZERO: tl.constexpr,
             BLOCK_N: tl.constexpr):
    if REDUCTION == 0:
        offs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = offs < N
        loss, w, _ = _pick(x, target, weight, offs.to(tl.int64), mask, C, sxn, sxc, st, ignore_index, HAS_W)
        tl.store(out + offs, loss.to(out.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_N], tl.float32)
        wacc = tl.zeros([BLOCK_N], tl.float32)
        cacc = tl.zeros([BLOCK_N], tl.float32)
        for k in range(0, N, BLOCK_N):
            offs = k + tl.arange(0, BLOCK_N)
            loss, w, counted = _pick(x, target, weight, offs.to(tl.int64), offs < N, C, sxn, sxc, st,
                                     ignore_index, HAS_W)
            acc += loss
            wacc += w
            cacc += counted
        total = tl.sum(acc, axis=0)
        wsum = tl.sum(wacc, axis=0)
        if REDUCTION == 1:
            total = total / wsum  # 0/0 = NaN when nothing counts (or all weights are 0): torch's rule
            if IGNORED_MEAN_ZERO:
                total = tl.where(tl.sum(cacc, axis=0) == 0, 0.0, total)
        tl.store(out, total.to(out.dtype.element_ty))
        tl.store(tw, wsum.to(tw.dtype.element_ty))


@triton.jit
def _nll_bwd(grad, x_unused, target, weight, tw, gin, N, C, sg, st, ignore_index,
             HAS_W: tl.constexpr, REDUCTION: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    t = tl.load(target + n * st)
    in_range = (t >= 0) & (t < C)
    valid = (t != ignore_index) & in_range
    tc = tl.where(valid, t, 0)
    if HAS_W:
        w = tl.load(weight + tc).to(tl.float32)
    else:
        w = 1.0
    g = tl.load(grad + n * sg).to(tl.float32)
    if REDUCTION == 1:
        g = g / tl.load(tw).to(tl.float32)
    val = tl.where(valid, -w * g, 0.0)
    row = tl.where(cols == t, val, 0.0)
    row = tl.where((t != ignore_index) & ~in_range, float("nan"), row)  # forward's NaN, not a silent 0
    tl.store(gin + n * C + cols, row.to(gin.dtype.element_ty), mask=cmask)


_tuner = Tuner("nll_loss", kernels=[_nll_fwd, _nll_bwd])


def _check(self, target, weight, reduction):
    if not on_vendor_device(self, target, weight) or not kernel_dtype_ok(self.dtype):
        raise Unsupported
    if not self.dtype.is_floating_point or target.dtype != torch.int64 or reduction not in (NONE, MEAN, SUM):
        raise Unsupported
    if self.dim() not in (1, 2) or target.dim() != self.dim() - 1:
        raise Unsupported  # shape errors are torch's
    if self.dim() == 2 and target.shape[0] != self.shape[0]:
        raise Unsupported
    C = self.shape[-1]
    if weight is not None and (weight.shape != (C,) or weight.dtype != self.dtype or not weight.is_contiguous()):
        raise Unsupported
    return C


@with_fallback("nll_loss_forward")
def nll_loss_forward(self, target, weight, reduction, ignore_index):
    """aten::nll_loss_forward -> (output, total_weight)."""
    C = _check(self, target, weight, reduction)
    cfg = _tuner.default  # one config: the work is a gather per sample, or one write pass
    N = self.shape[0] if self.dim() == 2 else 1
    sxn, sxc = (self.stride(0), self.stride(1)) if self.dim() == 2 else (0, self.stride(0))
    st = target.stride(0) if target.dim() == 1 else 0
    tw = torch.zeros((), dtype=self.dtype, device=self.device)
    has_w = weight is not None
    w = weight if has_w else self
    if reduction == NONE and self.dim() == 2:
        out = torch.empty((N,), dtype=self.dtype, device=self.device)
        if N:
            bn = min(cfg["BLOCK_N"], next_pow2(N))
            launcher(_nll_fwd)[(cdiv(N, bn),)](self, target, w, out, tw, N, C, sxn, sxc, st, ignore_index,
                                     HAS_W=has_w, REDUCTION=NONE, IGNORED_MEAN_ZERO=False, BLOCK_N=bn,
                                     num_warps=cfg["num_warps"])
        return out, tw
    out = torch.empty((), dtype=self.dtype, device=self.device)
    bn = min(cfg["BLOCK_N"], next_pow2(max(N, 1)))
    # a 1-D input with reduction none is one sample: its loss, unscaled, like sum
    red = SUM if reduction == NONE else reduction
    # torch's CUDA kernel for a 1-D input gives 0 for the mean loss of an ignored target
    # (total_weight 0), where its CPU kernel and every 2-D input give 0/0 = NaN
    ignored_zero = self.dim() == 1 and self.device.type == "cuda"
    launcher(_nll_fwd)[(1,)](self, target, w, out, tw, N, C, sxn, sxc, st, ignore_index,
                   HAS_W=has_w, REDUCTION=red, IGNORED_MEAN_ZERO=ignored_zero, BLOCK_N=bn,
                   num_warps=cfg["num_warps"])
    return out, tw


@with_fallback("nll_loss_backward")
def nll_loss_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight):
    """aten::nll_loss_backward -> grad_input (-w[t] * grad at the target column, zero elsewhere)."""
    C = _check(self, target, weight, reduction)
    if not on_vendor_device(grad_output, total_weight) or total_weight.numel() != 1:
        raise Unsupported
    N = self.shape[0] if self.dim() == 2 else 1
    per_sample = reduction == NONE and self.dim() == 2
    if grad_output.numel() != (N if per_sample else 1):
        raise Unsupported
    gin = torch.empty(self.shape, dtype=self.dtype, device=self.device)
    if gin.numel() == 0:
        return gin
    cfg = _tuner.default  # one config: the work is a gather per sample, or one write pass
    bc = min(cfg["BLOCK_C"], next_pow2(C))
    sg = grad_output.stride(0) if per_sample else 0
    st = target.stride(0) if target.dim() == 1 else 0
    red = SUM if reduction == NONE else reduction
    launcher(_nll_bwd)[(N, cdiv(C, bc))](grad_output, self, target, weight if weight is not None else self,
                                       total_weight, gin, N, C, sg, st, ignore_index,
                                       HAS_W=weight is not None, REDUCTION=red, BLOCK_C=bc,
                                       num_warps=cfg["num_warps"])
    return gin


declare("nll_loss", {"nll_loss_forward": nll_loss_forward, "nll_loss_backward": nll_loss_backward})

"""cross_entropy: ``F.cross_entropy`` on class indices in one pass over the logits, with backward.

torch runs ``aten::cross_entropy_loss`` as a composite: ``log_softmax`` writes an [N, C]
tensor as large as the logits, then ``nll_loss`` picks one element per row. Here one
program per row reads its logits once, keeping a running max and sum of exponentials
(one ``exp2`` per element, fp32), and writes only the row's loss, its weight and its
log-sum-exp; a one-program kernel sums the rows in a fixed order (deterministic, like
torch's CUDA nll_loss). The backward reads the logits once more and writes the gradient
``g * (w_t (1 - e) (p - onehot) + e / C (W p - w))`` (p = softmax, e = label smoothing,
W = sum of the class weights), so a training step moves 3 x N x C elements where the
composite moves about 6. At 4096 x 128256 (Llama-3's vocabulary) that is what decides.

``aten::cross_entropy_loss`` is CompositeImplicitAutograd, decomposed before any backend
kernel runs, so this file declares it at the autograd level (``declare(...,
autograd=True)``) and records its own backward through ``_CrossEntropyFn``. Handled:
2-D float32/float16/bfloat16 logits with unit column stride, int64 class-index targets,
optional class weights, reductions none/mean/sum, ``ignore_index`` and label smoothing.
Everything else (probability targets, [N, C, d1, ...] inputs, 1-D inputs, weights that
need a gradient, fake or functional tensors under ``torch.compile``) takes torch's
composite. A target outside [0, C) that is not ``ignore_index`` gives a NaN loss (torch
raises a device-side assert) rather than reading out of bounds.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Plans, Tuner, declare, fallback, launcher, on_vendor_device, plain_tensors
from ._common import allocation_stand_in, cdiv, current_device, next_pow2, planned_output

__all__ = ["cross_entropy"]

NONE, MEAN, SUM = 0, 1, 2
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _ce_fwd_kernel(X, T, W, ROW_LOSS, WS, N, C, sxn, st, ignore_index, smoothing,
                   HAS_W: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr):
    # WS (fp32): [0, N) row losses of a reduced loss, [N, 2N) row weights, [2N, 3N) row
    # log-sum-exps, 3N the sum of the class weights, 3N + 1 the mean's denominator
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * sxn
    offs = tl.arange(0, BLOCK)
    # running max and sum in base 2 (x * log2 e), one exp2 per element
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    sum_wx = tl.zeros([BLOCK], tl.float32)  # sum of w_c * x_c, for label smoothing
    sum_w = tl.zeros([BLOCK], tl.float32)
    for c0 in range(0, C, BLOCK):
        cols = c0 + offs
        mask = cols < C
        x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        x2 = x * LOG2E
        m_new = tl.maximum(m, tl.max(x2, 0))
        # all -inf so far: any finite reference keeps exp2 at 0 instead of NaN
        ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.math.exp2(m - ref) + tl.sum(tl.math.exp2(x2 - ref), 0)
        m = m_new
        if SMOOTH:
            x0 = tl.where(mask, x, 0.0)  # not -inf * 0 in the padding
            if HAS_W:
                wc = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
                sum_wx += x0 * wc
                sum_w += wc
            else:
                sum_wx += x0
    lse = (m + tl.math.log2(s)) * LN2

    t = tl.load(T + row * st)
    ignored = t == ignore_index
    in_range = (t >= 0) & (t < C)
    tc = tl.where(in_range, t, 0)
    x_t = tl.load(x_row + tc).to(tl.float32)
    if HAS_W:
        w_t = tl.load(W + tc).to(tl.float32)
    else:
        w_t = 1.0
    loss = w_t * (lse - x_t)
    if SMOOTH:
        if HAS_W:
            w_all = tl.sum(sum_w, 0)
            if row == 0:
                tl.store(WS + 3 * N, w_all)
        else:
            w_all = C * 1.0
        # -sum_c w_c log p_c = W lse - sum_c w_c x_c
        loss = (1.0 - smoothing) * loss + (smoothing / C) * (w_all * lse - tl.sum(sum_wx, 0))
    loss = tl.where(in_range, loss, float("nan"))
    tl.store(ROW_LOSS + row, tl.where(ignored, 0.0, loss).to(ROW_LOSS.dtype.element_ty))
    tl.store(WS + N + row, tl.where(ignored, 0.0, w_t))
    tl.store(WS + 2 * N + row, lse)


@triton.jit
def _ce_reduce_kernel(WS, OUT, N, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    wacc = tl.zeros([BLOCK], tl.float32)
    for n0 in range(0, N, BLOCK):
        mask = n0 + offs < N
        acc += tl.load(WS + n0 + offs, mask=mask, other=0.0)
        wacc += tl.load(WS + N + n0 + offs, mask=mask, other=0.0)
    total = tl.sum(acc, 0)
    wsum = tl.sum(wacc, 0)
    if MEAN:
        total = total / wsum  # 0 / 0 = NaN when every target is ignored: torch's result too
    tl.store(OUT, total.to(OUT.dtype.element_ty))
    tl.store(WS + 3 * N + 1, wsum)


@triton.jit
def _ce_bwd_kernel(X, T, W, WS, G, DX, N, C, sxn, st, sg, ignore_index, smoothing,
                   HAS_W: tl.constexpr, SMOOTH: tl.constexpr, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < C
    t = tl.load(T + row * st)
    ignored = t == ignore_index
    in_range = (t >= 0) & (t < C)
    tc = tl.where(in_range, t, 0)
    g = tl.load(G + row * sg).to(tl.float32)
    if MEAN:
        g = g / tl.load(WS + 3 * N + 1)
    lse = tl.load(WS + 2 * N + row)
    x = tl.load(X + row * sxn + cols, mask=mask, other=0.0).to(tl.float32)
    p = tl.math.exp2((x - lse) * LOG2E)
    if HAS_W:
        w_t = tl.load(W + tc).to(tl.float32)
    else:
        w_t = 1.0
    onehot = (cols == t).to(tl.float32)
    if SMOOTH:
        a = (1.0 - smoothing) * w_t
        if HAS_W:
            w_c = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
            w_all = tl.load(WS + 3 * N)
        else:
            w_c = 1.0
            w_all = C * 1.0
        grad = (a + (smoothing / C) * w_all) * p - a * onehot - (smoothing / C) * w_c
    else:
        grad = w_t * (p - onehot)
    grad = tl.where(in_range, g * grad, float("nan"))
    grad = tl.where(ignored, 0.0, grad)
    tl.store(DX + row * C + cols, grad.to(DX.dtype.element_ty), mask=mask)


_tuner = Tuner("cross_entropy", kernels=[_ce_fwd_kernel, _ce_reduce_kernel, _ce_bwd_kernel])


def _kernel_ok(x, target, weight, reduction, label_smoothing) -> bool:
    if VENDOR is None or not plain_tensors(x, target, weight) or not on_vendor_device(x, target, weight):
        return False
    if x.dtype not in _KERNEL_DTYPES or x.dtype not in VENDOR.dtypes or target.dtype != torch.int64:
        return False  # float targets are class probabilities: torch's path
    if x.dim() != 2 or target.dim() != 1 or target.shape[0] != x.shape[0] or x.numel() == 0:
        return False  # [N, C, d1, ...], 1-D inputs, shape errors and empty batches: torch's
    if x.stride(1) != 1 or reduction not in (NONE, MEAN, SUM):
        return False
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing <= 1.0:
        return False  # torch's error message
    dev = x.get_device()
    if target.get_device() != dev or dev != current_device():
        return False
    if weight is not None:
        if (weight.shape != (x.shape[1],) or weight.dtype != x.dtype or weight.stride(0) != 1
                or weight.get_device() != dev or (weight.requires_grad and torch.is_grad_enabled())):
            return False  # no gradient for the class weights here
    return True


class _Plan:
    """One call signature's launches: allocations from stand-ins, kernels with fixed
    integers (``Bound.prepare``), so a repeated call skips the checks and Triton's
    argument handling. A training step at 1024 x 32000 is host-bound (the kernels take
    78 us of an H100's time, the step's Python several times that)."""

    __slots__ = ("fwd", "reduce", "out_like", "out_shape", "ws_like", "ws_len", "none", "weighted",
                 "bwd", "bwd_kernel", "bwd_grid", "bwd_ints", "dx_like", "shape", "dtype")

    def __init__(self, x, target, weight, reduction, ignore_index, smoothing, out, ws):
        N, C = x.shape
        cfg = _tuner.default
        self.none, self.weighted = reduction == NONE, weight is not None
        self.shape, self.dtype = (N, C), x.dtype
        tail = (N, C, x.stride(0), target.stride(0), ignore_index, smoothing)
        self.fwd = launcher(_ce_fwd_kernel).bind(
            HAS_W=self.weighted, SMOOTH=smoothing > 0, BLOCK=min(cfg["BLOCK"], next_pow2(C)),
            num_warps=cfg["num_warps"]).prepare((N,), tail).planned
        self.reduce = None if self.none else launcher(_ce_reduce_kernel).bind(
            MEAN=reduction == MEAN, BLOCK=min(1024, next_pow2(N)), num_warps=4).prepare((1,), (N,)).planned
        self.out_like, self.out_shape = allocation_stand_in(out), out.shape
        self.ws_like, self.ws_len = allocation_stand_in(ws), ws.shape[0]
        block = min(cfg["BLOCK_BWD"], next_pow2(C))
        self.bwd_kernel = launcher(_ce_bwd_kernel).bind(
            HAS_W=self.weighted, SMOOTH=smoothing > 0, MEAN=reduction == MEAN, BLOCK=block,
            num_warps=cfg["num_warps_bwd"])
        self.bwd_grid = (N, cdiv(C, block))
        # the integer arguments; the cotangent's row stride (0 for a reduced loss or an
        # expanded one) goes between the first four and the last two at backward
        self.bwd_ints = (N, C, x.stride(0), target.stride(0), ignore_index, smoothing)
        self.bwd: dict = {}  # (cotangent's stride, dtype) -> planned launch
        self.dx_like = None

    def forward(self, x, target, weight):
        """(loss, workspace): the loss as torch returns it, and the fp32 workspace the backward reads."""
        ws = planned_output(self.ws_like, (self.ws_len,), (1,), torch.float32, x)
        out = planned_output(self.out_like, self.out_shape, (1,) if self.none else (), self.dtype, x)
        self.fwd(x, target, weight if self.weighted else x, out if self.none else ws, ws)
        if not self.none:
            self.reduce(ws, out)
        return out, ws

    def backward(self, grad, x, target, weight, ws):
        sg = grad.stride(0) if self.none else 0
        launch = self.bwd.get((sg, grad.dtype))
        if launch is None:
            ints = self.bwd_ints
            launch = self.bwd[(sg, grad.dtype)] = self.bwd_kernel.prepare(
                self.bwd_grid, (*ints[:4], sg, *ints[4:])).planned
        dx = planned_output(self.dx_like, self.shape, (self.shape[1], 1), self.dtype, x)
        if self.dx_like is None:
            self.dx_like = allocation_stand_in(dx)
        launch(x, target, weight if self.weighted else x, ws, grad, dx)
        return dx


# (x, target, weight signatures, reduction, ignore_index, smoothing) -> _Plan
_PLANS = Plans()


def _plan(x, target, weight, reduction, ignore_index, smoothing):
    """The call's plan, or None where torch's composite must run."""
    key = (x.shape, x.stride(), x.dtype, x.device, target.shape, target.stride(), target.dtype, target.device,
           None if weight is None else (weight.shape, weight.stride(), weight.dtype, weight.device),
           reduction, ignore_index, smoothing)
    plan = _PLANS.get(key)
    if plan is not None:
        # what the key cannot hold: tracing or dispatch modes, the current device, a weight's gradient
        if (not plain_tensors(x, target, weight) or x.get_device() != current_device()
                or (weight is not None and weight.requires_grad and torch.is_grad_enabled())):
            return None
        return plan
    if not _kernel_ok(x, target, weight, reduction, smoothing):
        return None
    N = x.shape[0]
    # one allocation for every fp32 side result (see _ce_fwd_kernel); per-row losses go
    # straight into the result for reduction none
    ws = torch.empty(3 * N + 2, dtype=torch.float32, device=x.device)
    out = torch.empty((N,) if reduction == NONE else (), dtype=x.dtype, device=x.device)
    return _PLANS.keep(key, _Plan(x, target, weight, reduction, ignore_index, smoothing, out, ws))


class _CrossEntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, weight, plan, reduction, ignore_index, smoothing):
        loss, ws = plan.forward(x, target, weight)
        ctx.save_for_backward(x, target, weight, ws)
        ctx.args = (plan, reduction, ignore_index, smoothing)
        return loss

    @staticmethod
    def backward(ctx, grad):
        x, target, weight, ws = ctx.saved_tensors
        plan, reduction, ignore_index, smoothing = ctx.args
        if torch.is_grad_enabled():
            # create_graph=True (double backward): differentiate torch's composite instead, whose
            # gradient is itself differentiable (a reentrant grad from the saved input, which is
            # connected to the outer graph)
            with torch.enable_grad():
                loss = fallback("cross_entropy_loss", x, target, weight, reduction, ignore_index, smoothing)
                (dx,) = torch.autograd.grad(loss, x, grad, create_graph=True)
            return dx, None, None, None, None, None, None
        # (an expanded cotangent of loss.sum().backward() has stride 0: every row reads its one value)
        return plan.backward(grad, x, target, weight, ws), None, None, None, None, None, None


def cross_entropy_loss(self, target, weight=None, reduction=MEAN, ignore_index=-100, label_smoothing=0.0):
    """aten::cross_entropy_loss (``F.cross_entropy``), differentiable in ``self``."""
    smoothing = float(label_smoothing) if isinstance(label_smoothing, (int, float)) else label_smoothing
    plan = _plan(self, target, weight, reduction, ignore_index, smoothing)
    if plan is None:
        return fallback("cross_entropy_loss", self, target, weight, reduction, ignore_index, label_smoothing)
    if self.requires_grad and torch.is_grad_enabled():
        return _CrossEntropyFn.apply(self, target, weight, plan, reduction, ignore_index, smoothing)
    return plan.forward(self, target, weight)[0]


_REDUCTIONS = {"none": NONE, "mean": MEAN, "sum": SUM}


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """``torch.nn.functional.cross_entropy`` through the gems kernels (class-index targets)."""
    return cross_entropy_loss(input, target, weight, _REDUCTIONS[reduction], ignore_index, label_smoothing)


declare("cross_entropy", {"cross_entropy_loss": cross_entropy_loss}, autograd=True)

"""log_softmax over any dim: ``_log_softmax`` (+ ``.out``) and ``_log_softmax_backward_data``.

Same kernels as softmax (``LOG=True``): ``x - max - log(sum(exp(x - max)))`` forward,
``g - exp(y) * sum(g)`` backward, fp32 accumulation.
"""
from __future__ import annotations

import torch

from ..runtime import declare, with_fallback
from .softmax import _out_dtype, softmax_backward, softmax_forward

__all__ = ["log_softmax"]


@with_fallback("_log_softmax")
def _log_softmax(self, dim, half_to_float):
    """aten::_log_softmax."""
    return softmax_forward(self, dim, _out_dtype(self, half_to_float), True)


@with_fallback("_log_softmax.out")
def _log_softmax_out(self, dim, half_to_float, *, out):
    """aten::_log_softmax.out."""
    softmax_forward(self, dim, _out_dtype(self, half_to_float), True, out=out)
    return out


@with_fallback("_log_softmax_backward_data")
def _log_softmax_backward_data(grad_output, output, dim, input_dtype):
    """aten::_log_softmax_backward_data."""
    return softmax_backward(grad_output, output, dim, input_dtype, True)


def log_softmax(input, dim, dtype=None):
    """``torch.log_softmax(input, dim, dtype)`` through the gems kernels (differentiable)."""
    if dtype is not None:
        input = input.to(dtype)
    if not (torch.is_grad_enabled() and input.requires_grad):
        return _log_softmax(input, dim, False)
    return _LogSoftmaxFn.apply(input, dim)


class _LogSoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = _log_softmax(x, dim, False)
        ctx.save_for_backward(y)
        ctx.dim, ctx.dtype = dim, x.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return _log_softmax_backward_data(g, y, ctx.dim, ctx.dtype), None


declare("log_softmax", {
    "_log_softmax": _log_softmax,
    "_log_softmax.out": _log_softmax_out,
    "_log_softmax_backward_data": _log_softmax_backward_data,
})

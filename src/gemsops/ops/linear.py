"""linear: ``aten::linear`` (``F.linear``, ``nn.Linear``) in one host call where no gradient is recorded.

Torch's composite flattens the input's leading dims, transposes the weight, calls ``mm``
or ``addmm`` (gems' kernels when enabled) and views the result back: several dispatches
around one GEMM, for every projection of a model's forward. Here, declared at the
autograd level, the same GEMM reads the input and the weight where they lie: the
leading dims collapse into one row stride, the weight is read transposed through its
strides, and a bias is added in the epilogue in fp32 before the single rounding, as in
gems' addmm. The result is the one torch's composite would get from gems' mm/addmm.

Calls that record a gradient or forward-mode AD, tensors under tracing or dispatch modes,
1-D inputs, mixed dtypes, empty products and leading dims that no single stride walks
take torch's composite, whose mm/addmm are gems' kernels again.
"""
from __future__ import annotations

import torch

from ..runtime import Unsupported, declare, fallback, on_vendor_device, plain_tensors, records_grad
from ._gemm import GEMM_DTYPES, CallPlans, gemm
from ._rows import collapsed_stride

__all__ = ["linear"]

_CALLS = CallPlans()


def linear(input, weight, bias=None):
    """aten::linear: ``input @ weight.T + bias`` over the input's last dim."""
    if records_grad(input, weight, bias):
        return fallback("linear", input, weight, bias)  # the composite records mm/addmm's backward
    if not plain_tensors(input, weight, bias):
        return fallback("linear", input, weight, bias)  # fake sizes would not make a plan key
    key = (input.shape, input.stride(), input.dtype, weight.shape, weight.stride(), weight.dtype,
           None if bias is None else (bias.shape, bias.stride(), bias.dtype))
    out = _CALLS.launch(key, input, weight, bias)
    if out is not None:
        return out
    try:
        return _linear(key, input, weight, bias)
    except Unsupported:
        return fallback("linear", input, weight, bias)


def _linear(key, input, weight, bias):
    if not on_vendor_device(input, weight, bias):
        raise Unsupported
    dtype = input.dtype
    if dtype not in GEMM_DTYPES or weight.dtype != dtype or (bias is not None and bias.dtype != dtype):
        raise Unsupported  # torch's promotion rules or its dtype error
    if input.dim() < 2 or weight.dim() != 2 or (bias is not None and bias.dim() != 1):
        raise Unsupported  # vector inputs and other bias shapes: torch's matmul/broadcast rules
    N, K = weight.shape
    if input.shape[-1] != K or (bias is not None and bias.shape[0] != N):
        raise Unsupported  # torch's shape error
    M = input.numel() // K if K else 0
    row_stride = collapsed_stride(input)
    if M == 0 or N == 0 or K == 0 or row_stride is None:
        raise Unsupported  # empty products (torch's zeros or bias), or a copy torch's reshape makes
    out = torch.empty((*input.shape[:-1], N), dtype=dtype, device=input.device)
    sa = (0, row_stride, input.stride(-1))
    sb = (0, weight.stride(1), weight.stride(0))  # weight.T
    sx = (0, 0, 0) if bias is None else (0, 0, bias.stride(0))
    gemm(input, sa, weight, sb, out, (0, N, 1), bias, sx, 1, M, N, K)
    if key not in _CALLS:
        _CALLS.remember(key, input, sa, weight, sb, out, bias, sx, M, N, K)
    return out


# the composite op itself, above autograd (and at the backend key that inference tensors reach)
declare("linear", {"linear": linear}, autograd=True)

"""slice_backward: the gradient of ``x[..., start:end:step, ...]`` with respect to ``x``.

Zeros everywhere except the sliced positions, which receive ``grad_output``. Start, end
and step are clamped by ``aten.slice`` exactly as in the forward view.
"""
import torch

from ..runtime import declare, with_fallback
from .copy import _copy_run
from .full import zeros

__all__ = ["slice_backward"]


@with_fallback("slice_backward")
def slice_backward(grad_output, input_sizes, dim, start, end, step):
    """aten::slice_backward with gems' fill and copy kernels."""
    grad_input = zeros(input_sizes, dtype=grad_output.dtype, device=grad_output.device)
    _copy_run(torch.ops.aten.slice.Tensor(grad_input, dim, start, end, step), grad_output)
    return grad_input


declare("slice_backward", {"slice_backward": slice_backward})

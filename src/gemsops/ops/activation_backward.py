"""Backward of the activations: threshold_backward (relu), gelu, silu, sigmoid, tanh.

Same formulas as torch's kernels, in fp32 for half types.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported
from . import _math
from ._pointwise import Pointwise, declare_pointwise

__all__ = ["threshold_backward", "gelu_backward", "silu_backward", "sigmoid_backward", "tanh_backward"]

_SQRT1_2 = tl.constexpr(0.70710678118654752440)
_INV_SQRT_2PI = tl.constexpr(0.39894228040143267794)
_SQRT_2_OVER_PI = tl.constexpr(0.79788456080286535588)
_KAPPA = tl.constexpr(0.044715)


@triton.jit
def _threshold_backward(g, x, threshold):
    return tl.where(x <= threshold, 0, g)


@triton.jit
def _gelu_backward(g, x):
    cdf = 0.5 * (1.0 + _math.erf(x * _SQRT1_2))
    pdf = tl.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return g * (cdf + x * pdf)


@triton.jit
def _gelu_tanh_backward(g, x):
    x_sq = x * x
    t = _math.tanh((x + x_sq * x * _KAPPA) * _SQRT_2_OVER_PI)  # tensor first, for the interpreter
    left = 0.5 * x
    right = 1.0 + t
    right_derivative = left * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + x_sq * (3.0 * _KAPPA))
    return g * (0.5 * right + right_derivative)


@triton.jit
def _silu_backward(g, x):
    s = _math.sigmoid(x)
    return g * s * (1.0 + x * (1.0 - s))


@triton.jit
def _sigmoid_backward(g, y):
    return g * (1.0 - y) * y


@triton.jit
def _tanh_backward(g, y):
    return g * (1.0 - y * y)


# the threshold is cast to the computation dtype but does not take part in promotion
_threshold_op = Pointwise("threshold_backward", _threshold_backward, promote=(0, 1))
_gelu_op = Pointwise("gelu_backward", _gelu_backward)  # unrolled it was no faster (H100)
_gelu_tanh_op = Pointwise("gelu_backward", _gelu_tanh_backward)
_silu_op = Pointwise("silu_backward", _silu_backward)
_sigmoid_op = Pointwise("sigmoid_backward", _sigmoid_backward)
_tanh_op = Pointwise("tanh_backward", _tanh_backward)


def _floats(*tensors):
    if not all(t.dtype.is_floating_point for t in tensors):
        raise Unsupported


def _threshold_run(grad_output, self, threshold, *, out=None):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise Unsupported
    if isinstance(threshold, float) and not _threshold_op.dtypes((grad_output, self))[0].is_floating_point:
        raise Unsupported
    return _threshold_op(grad_output, self, threshold, out=out)


def _gelu_run(grad_output, self, *, approximate="none", out=None):
    if approximate not in ("none", "tanh"):
        raise Unsupported
    _floats(grad_output, self)
    return (_gelu_op if approximate == "none" else _gelu_tanh_op)(grad_output, self, out=out)


def _binary(op):
    def run(grad_output, x, *, out=None):
        _floats(grad_output, x)
        return op(grad_output, x, out=out)
    return run


def _overloads(name):
    return [f"{name}.default", f"{name}.grad_input"]


threshold_backward = declare_pointwise("threshold_backward", _threshold_run, _overloads("threshold_backward"),
                                       public=torch.ops.aten.threshold_backward)
gelu_backward = declare_pointwise("gelu_backward", _gelu_run, _overloads("gelu_backward"),
                                  public=torch.ops.aten.gelu_backward)
silu_backward = declare_pointwise("silu_backward", _binary(_silu_op), _overloads("silu_backward"),
                                  public=torch.ops.aten.silu_backward)
sigmoid_backward = declare_pointwise("sigmoid_backward", _binary(_sigmoid_op), _overloads("sigmoid_backward"),
                                     public=torch.ops.aten.sigmoid_backward)
tanh_backward = declare_pointwise("tanh_backward", _binary(_tanh_op), _overloads("tanh_backward"),
                                  public=torch.ops.aten.tanh_backward)

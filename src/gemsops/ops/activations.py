"""Activations relu, gelu (erf and tanh forms), silu, sigmoid, tanh.

Computed in fp32 for half types (fp64 in fp64) from ``tl.math`` only: NaN propagates
(relu(NaN) is NaN), large |x| saturates without NaN.
"""
import torch
import triton
import triton.language as tl

from ..runtime import Unsupported
from . import _math
from ._pointwise import Pointwise, Promotion, declare_pointwise

__all__ = ["relu", "gelu", "silu", "sigmoid", "tanh"]

_SQRT1_2 = tl.constexpr(0.70710678118654752440)
_SQRT_2_OVER_PI = tl.constexpr(0.79788456080286535588)
_KAPPA = tl.constexpr(0.044715)


@triton.jit
def _relu(x):
    return tl.where(x < 0, 0, x)


@triton.jit
def _gelu(x):
    return 0.5 * x * (1.0 + _math.erf(x * _SQRT1_2))


@triton.jit
def _gelu_tanh(x):
    # 0.5 * (1 + tanh(u)) = sigmoid(2u): one exp and one division instead of the expm1-based
    # tanh (a 12-term series near 0, a select and two divisions), which made this op
    # compute-bound (0.8x native at 16384x8192 bf16);
    # also free of the cancellation in 1 + tanh(u) for negative x. +-inf and NaN give
    # what torch's formula gives (-inf: -inf / inf = NaN, as -inf * 0).
    inner = (x + x * x * x * _KAPPA) * _SQRT_2_OVER_PI  # tensor first: constexpr * tensor breaks the interpreter
    return x / (1.0 + tl.exp(-2.0 * inner))


@triton.jit
def _silu(x):
    return x / (1.0 + tl.exp(-x))


_relu_op = Pointwise("relu", _relu)  # opmath: the interpreter compares bf16 as raw bits
# erf and the expm1-based tanh cost enough that large tensors run four blocks per program
# (_pointwise.UNROLL_FROM); H100, 16384x8192 bf16: gelu 202.3 -> 187.4 us (native 192.7),
# tanh 200.7 -> 187.9 (native 181.7; 211.5 before _math.expm1's shorter fp32 series)
_gelu_op = Pointwise("gelu", _gelu, unroll=4)
_gelu_tanh_op = Pointwise("gelu", _gelu_tanh)
_silu_op = Pointwise("silu", _silu)
_sigmoid_op = Pointwise("sigmoid", _math.sigmoid, Promotion.INT_TO_FLOAT)
_tanh_op = Pointwise("tanh", _math.tanh, Promotion.INT_TO_FLOAT, unroll=4)


def _float_only(op):
    def run(self, *, out=None):
        if not self.dtype.is_floating_point:
            raise Unsupported  # torch's own error for integer inputs
        return op(self, out=out)
    return run


def _relu_run(self, *, out=None):
    if self.dtype == torch.bool:
        raise Unsupported
    return _relu_op(self, out=out)


def _gelu_run(self, *, approximate="none", out=None):
    if approximate not in ("none", "tanh"):
        raise Unsupported
    return _float_only(_gelu_op if approximate == "none" else _gelu_tanh_op)(self, out=out)


def _unary_overloads(name):
    return [f"{name}.default", f"{name}.out", f"{name}_.default"]


relu = declare_pointwise("relu", _relu_run, _unary_overloads("relu"))
gelu = declare_pointwise("gelu", _gelu_run, _unary_overloads("gelu"), public=torch.nn.functional.gelu)
silu = declare_pointwise("silu", _float_only(_silu_op), _unary_overloads("silu"), public=torch.nn.functional.silu)
sigmoid = declare_pointwise("sigmoid", lambda self, *, out=None: _sigmoid_op(self, out=out), _unary_overloads("sigmoid"))
tanh = declare_pointwise("tanh", lambda self, *, out=None: _tanh_op(self, out=out), _unary_overloads("tanh"))

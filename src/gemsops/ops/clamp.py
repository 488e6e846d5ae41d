"""clamp, clamp_min, clamp_max (Scalar and Tensor bounds).

``min(max(x, lo), hi)`` with NaN propagation from x and from either bound, as torch does;
lo > hi gives hi. A lone NaN scalar bound goes to torch (its result depends on the version). The result dtype is the promoted dtype of x and the bounds.
"""
import triton
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported
from ._pointwise import Pointwise, Promotion, declare_pointwise

__all__ = ["clamp", "clamp_min", "clamp_max"]


@triton.jit
def _lower(x, lo):
    return tl.where(lo != lo, lo, tl.where(x < lo, lo, x))


@triton.jit
def _upper(x, hi):
    return tl.where(hi != hi, hi, tl.where(x > hi, hi, x))


@triton.jit
def _both(x, lo, hi):
    return _upper(_lower(x, lo), hi)


_KIND = Promotion.DEFAULT  # fp32 compares for half types (the interpreter compares bf16 as raw bits)
_min_op = Pointwise("clamp", _lower, _KIND)
_max_op = Pointwise("clamp", _upper, _KIND)
_both_op = Pointwise("clamp", _both, _KIND)


def _clamp_run(self, min=None, max=None, *, out=None):  # noqa: A002
    if isinstance(min, bool) or isinstance(max, bool):
        raise Unsupported
    if min is None and max is None:
        raise Unsupported  # torch's own error
    if (max is None and _is_nan(min)) or (min is None and _is_nan(max)):
        # torch's own answer depends on its version: torch 2.11 on CUDA returns x for
        # clamp(x, min=nan), 2.13 returns NaN (pytorch/pytorch#172200); its kernel decides
        raise Unsupported
    if max is None:
        return _min_op(self, min, out=out)
    if min is None:
        return _max_op(self, max, out=out)
    return _both_op(self, min, max, out=out)


def _is_nan(bound):
    return isinstance(bound, float) and bound != bound


def _clamp_min_run(self, min, *, out=None):  # noqa: A002
    return _clamp_run(self, min, None, out=out)


def _clamp_max_run(self, max, *, out=None):  # noqa: A002
    return _clamp_run(self, None, max, out=out)


clamp = declare_pointwise("clamp", _clamp_run, [
    "clamp.default", "clamp.Tensor", "clamp.out", "clamp.Tensor_out", "clamp_.default", "clamp_.Tensor"])
clamp_min = declare_pointwise("clamp_min", _clamp_min_run, [
    "clamp_min.default", "clamp_min.Tensor", "clamp_min.out", "clamp_min.Tensor_out",
    "clamp_min_.default", "clamp_min_.Tensor"])
clamp_max = declare_pointwise("clamp_max", _clamp_max_run, [
    "clamp_max.default", "clamp_max.Tensor", "clamp_max.out", "clamp_max.Tensor_out",
    "clamp_max_.default", "clamp_max_.Tensor"])

"""logical_and/or/xor/not: inputs read as truth values (non-zero, NaN true), result bool."""
import torch
import triton
import triton.language as tl

from ._pointwise import Pointwise, declare_pointwise

__all__ = ["logical_and", "logical_or", "logical_xor", "logical_not"]


@triton.jit
def _and(a, b):
    # where, not &: the interpreter cannot & a tensor of conditions with a scalar one
    return tl.where(a != 0, b != 0, False)


@triton.jit
def _or(a, b):
    return tl.where(a != 0, True, b != 0)


@triton.jit
def _xor(a, b):
    return (a != 0) != (b != 0)


@triton.jit
def _not(a):
    return a == 0


def _logical(name, fn, nin=2):
    # inputs keep their own dtypes (no promotion); an out= of any dtype gets 0/1
    op = Pointwise(name, fn, promote=(), out_dtype=torch.bool)

    def run(*args, out=None):
        return op(*args, out=out)

    return declare_pointwise(name, run, [f"{name}.default", f"{name}.out", f"{name}_.default"])


logical_and = _logical("logical_and", _and)
logical_or = _logical("logical_or", _or)
logical_xor = _logical("logical_xor", _xor)
logical_not = _logical("logical_not", _not)

"""Scalar Triton math shared by pointwise ops, built from ``tl.math`` only.

libdevice is unavailable under the interpreter, so functions it would give (expm1, log1p,
tanh, pow) are written here with care for cancellation, overflow and special values.
Inputs are fp32 or fp64 (the generator computes half types in fp32).
"""
import triton
import triton.language as tl

INF = tl.constexpr(float("inf"))
NAN = tl.constexpr(float("nan"))


@triton.jit
def expm1(x):
    """exp(x) - 1 without cancellation near 0."""
    # |x| < 0.25: Taylor series, to x**13/13! in fp64 and to x**7/7! in fp32 (the next
    # term is below each type's rounding there); else exp(x) - 1 loses at most about 2 bits.
    # The shorter fp32 series matters: tanh (through expm1) was compute-bound on an H100.
    if x.dtype == tl.float64:
        p = 1.0 / 6227020800.0
        p = p * x + 1.0 / 479001600.0
        p = p * x + 1.0 / 39916800.0
        p = p * x + 1.0 / 3628800.0
        p = p * x + 1.0 / 362880.0
        p = p * x + 1.0 / 40320.0
        p = p * x + 1.0 / 5040.0
    else:
        p = x * 0.0 + 1.0 / 5040.0
    p = p * x + 1.0 / 720.0
    p = p * x + 1.0 / 120.0
    p = p * x + 1.0 / 24.0
    p = p * x + 1.0 / 6.0
    p = p * x + 0.5
    small = x + x * x * p
    return tl.where(tl.abs(x) < 0.25, small, tl.exp(x) - 1.0)


@triton.jit
def log1p(x):
    """log(1 + x) without cancellation near 0."""
    # |x| < 0.25: log1p(x) = 2 atanh(s), s = x / (2 + x), |s| < 1/7: odd series in s
    s = x / (2.0 + x)
    z = s * s
    p = 1.0 / 21.0
    p = p * z + 1.0 / 19.0
    p = p * z + 1.0 / 17.0
    p = p * z + 1.0 / 15.0
    p = p * z + 1.0 / 13.0
    p = p * z + 1.0 / 11.0
    p = p * z + 1.0 / 9.0
    p = p * z + 1.0 / 7.0
    p = p * z + 1.0 / 5.0
    p = p * z + 1.0 / 3.0
    small = 2.0 * s + 2.0 * s * z * p
    return tl.where(tl.abs(x) < 0.25, small, tl.log(1.0 + x))


@triton.jit
def tanh(x):
    """tanh through expm1: exact near 0, +-1 for large |x|, NaN stays NaN."""
    ax = tl.abs(x)
    ax = tl.where(ax > 20.0, 20.0, ax)  # tanh(20) rounds to 1 in fp64; NaN fails the test
    e = expm1(2.0 * ax)
    r = e / (e + 2.0)
    r = tl.where(x < 0, -r, r)
    return tl.where(x == 0, x, r)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def erf(x):
    return tl.math.erf(x)


@triton.jit
def sqrt(x):
    # tl.sqrt may be the approximate instruction for fp32; torch rounds correctly
    if x.dtype == tl.float64:
        r = tl.sqrt(x)
    else:
        r = tl.sqrt_rn(x)
    return r


@triton.jit
def div_rn(a, b):
    # IEEE round-to-nearest quotient; fp64 division already is
    if a.dtype == tl.float64:
        r = a / b
    else:
        r = tl.math.div_rn(a, b)
    return r


@triton.jit
def trunc(x):
    return tl.where(x < 0, tl.ceil(x), tl.floor(x))


@triton.jit
def pow_float(a, b):
    """a ** b for floats, with C pow's special cases."""
    aa = tl.abs(a)
    r = tl.exp2(b * tl.log2(aa))
    # nested where instead of & on conditions: a scalar b gives scalar conditions, which
    # the interpreter cannot combine with &
    b_int = tl.floor(b) == b  # true for +-inf too, which behave as even integers here
    half = b * 0.5
    b_odd = tl.where(b_int, tl.floor(half) != half, False)
    signed = tl.where(b_odd, -r, r)
    r = tl.where(a < 0, tl.where(b_int, signed, tl.where(aa != INF, NAN, r)), r)
    r = tl.where(a == 0, tl.where(1.0 / a < 0, signed, r), r)  # -0.0 ** odd keeps the sign
    r = tl.where(aa == 1.0, tl.where(tl.abs(b) == INF, 1.0, r), r)
    return tl.where(b == 0, 1.0, tl.where(a == 1.0, 1.0, r))

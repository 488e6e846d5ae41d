"""add, sub, rsub, mul, div (all rounding modes), floor_divide, pow, addcmul/addcdiv, lerp."""
import pytest
import torch

from tests.ops._pointwise_check import check, make, run_gems
from tests.util import DEVICE, FLOAT_DTYPES

FLOATS = FLOAT_DTYPES


@pytest.mark.parametrize("dtype", FLOATS + [torch.int32])
def test_add_sub_rsub_mul(dtype):
    a, b = make(3, 5, dtype=dtype, specials=dtype.is_floating_point), make(5, dtype=dtype)
    check("add", torch.add, a, b, alpha=2)
    check("sub", torch.sub, a, b)
    check("sub", torch.sub, a, b, alpha=3)
    check("sub", torch.sub, a.t() if a.dim() > 1 else a, 2)
    check("rsub", torch.rsub, a, b, alpha=2)
    check("rsub", torch.rsub, a, 1)
    check("mul", torch.mul, a, b)
    check("mul", torch.mul, a, 3)
    check("mul", lambda x, y: x.mul_(y), a, b)
    check("sub", lambda x, y: x.sub_(y, alpha=2), a, b)
    check("add", lambda x, y: x.add_(y), a, 2)


def test_arith_mixed_and_special():
    check("sub", torch.sub, make(4, dtype=torch.int32), 2.5)
    check("sub", torch.sub, make(4, dtype=torch.float16), make(4, dtype=torch.float32), alpha=0.5)
    check("mul", torch.mul, make(4, dtype=torch.bool), make(4, dtype=torch.bool))
    check("add", torch.add, make(4, dtype=torch.bool), make(4, dtype=torch.bool))
    check("mul", torch.mul, make(2, 3, dtype=torch.int8), 100)  # wraps like torch
    with pytest.raises(RuntimeError):
        run_gems("sub", torch.sub, make(3, dtype=torch.int32), make(3, dtype=torch.int32), alpha=2.5)
    with pytest.raises(RuntimeError):
        run_gems("sub", torch.sub, make(3, dtype=torch.bool), make(3, dtype=torch.bool))
    out = torch.empty(3, 5, device=DEVICE)
    check("sub", lambda x, y: torch.sub(x, y, out=out), make(3, 5), make(5))


@pytest.mark.parametrize("dtype", FLOATS)
def test_div_float_modes(dtype):
    a = make(4, 6, dtype=dtype, specials=True)
    b = make(6, dtype=dtype)
    b[0] = 0
    check("div", torch.div, a, b)
    check("div", torch.div, a, 0.5)
    served = dtype == torch.float32  # half types: torch rounds the quotient first; its kernel runs
    for mode in ("trunc", "floor"):
        check("div", torch.div, a, b, rounding_mode=mode, exact=True, served=served)
        check("div", torch.div, a.t(), 3, rounding_mode=mode, exact=True, served=served)
    check("div", lambda x, y: x.div_(y, rounding_mode="floor"), a, b, exact=True, served=served)
    check("div", torch.div, a.float(), b.float(), rounding_mode="trunc", exact=True)


def test_div_floor_edge_values():
    a = torch.tensor([-7.0, 7.0, -7.5, 7.5, 5.0, -5.0, 0.0, 1.0, -1.0, 3.0, float("nan"), float("inf"), -0.0],
                     device=DEVICE)
    b = torch.tensor([2.0, -2.0, 2.0, -2.0, float("inf"), float("inf"), 0.0, 0.0, 0.0, -0.5, 1.0, 3.0, 5.0],
                     device=DEVICE)
    for mode in (None, "trunc", "floor"):
        check("div", torch.div, a, b, rounding_mode=mode, exact=True)
    check("floor_divide", torch.floor_divide, a, b, exact=True)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int8, torch.uint8])
def test_div_integer(dtype):
    a = make(3, 7, dtype=dtype, low=-20, high=21)
    b = make(7, dtype=dtype, low=1, high=6)
    if dtype != torch.uint8:
        b = b * torch.tensor([1, -1, 1, -1, 1, -1, 1], dtype=dtype, device=DEVICE)
    check("div", torch.div, a, b)  # true division: float
    for mode in ("trunc", "floor"):
        check("div", torch.div, a, b, rounding_mode=mode)
        check("div", torch.div, a, 3, rounding_mode=mode)
    check("floor_divide", torch.floor_divide, a, b)
    check("floor_divide", lambda x, y: x.floor_divide_(y), a, b)


def test_integer_division_by_zero_is_torchs():
    a = make(4, dtype=torch.int32)
    zero = torch.zeros(4, dtype=torch.int32, device=DEVICE)
    for mode in ("trunc", "floor"):
        try:
            expected = torch.div(a, zero, rounding_mode=mode)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                run_gems("div", torch.div, a, zero, rounding_mode=mode)
            with pytest.raises(RuntimeError):
                run_gems("div", torch.div, a, 0, rounding_mode=mode)
        else:  # CUDA does not raise
            assert run_gems("div", torch.div, a, zero, rounding_mode=mode)[0].shape == expected.shape


@pytest.mark.parametrize("dtype", FLOATS)
def test_pow_float(dtype):
    base = make(3, 8, dtype=dtype, specials=True)
    for e in (0, 1, 2, 3, 0.5, -0.5, -1, -2, 2.5, -3, 1.5):
        check("pow", torch.pow, base.abs() + 0.5 if e not in (0, 1, 2, 3, -1, -2, -3) else base, e,
              scale=4 if dtype == torch.float32 else 1)
    check("pow", torch.pow, make(3, 8, dtype=dtype, positive=True), make(8, dtype=dtype), scale=4)
    check("pow", torch.pow, 2.5, make(3, 8, dtype=dtype), scale=4)
    check("pow", lambda x: x.pow_(2), base)


def test_pow_special_values():
    v = [-2.0, -1.5, 0.0, -0.0, 2.0, 0.5, float("inf"), -float("inf"), float("nan"), 1.0, -1.0]
    a = torch.tensor(v, device=DEVICE)
    b = torch.tensor(v[::-1], device=DEVICE)
    grid_a, grid_b = a[:, None].expand(11, 11), b[None, :].expand(11, 11)
    check("pow", torch.pow, grid_a, grid_b, exact=False)
    for e in (0, 1, 2, 3, -3, 0.5, -0.5, float("inf"), -float("inf"), float("nan"), 2.5):
        check("pow", torch.pow, a, e)
    check("pow", torch.pow, -2, make(6))
    check("pow", torch.pow, 1, torch.tensor([float("nan"), 2.0], device=DEVICE))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.int64])
def test_pow_integer(dtype):
    a = make(3, 6, dtype=dtype, low=-4, high=5)
    for e in (0, 1, 2, 3, 5, 13):
        check("pow", torch.pow, a, e)  # wraps on overflow as torch does
    check("pow", torch.pow, a, 0.5)  # float exponent: float result
    check("pow", torch.pow, a, make(6, dtype=dtype, low=0, high=4), served=False)
    with pytest.raises(RuntimeError, match="negative integer"):
        run_gems("pow", torch.pow, a, -2)


@pytest.mark.parametrize("dtype", FLOATS)
def test_addcmul_addcdiv(dtype):
    s, t1, t2 = make(3, 5, dtype=dtype), make(3, 1, dtype=dtype), make(5, dtype=dtype, positive=True)
    check("addcmul", torch.addcmul, s, t1, t2, value=0.5, scale=2)
    check("addcdiv", torch.addcdiv, s, t1, t2, value=-2, scale=2)
    check("addcmul", lambda x, y, z: x.addcmul_(y, z), s, t1, t2, scale=2)
    check("addcdiv", lambda x, y, z: x.addcdiv_(y, z, value=1e-3), s, t1, t2, scale=2)


def test_addcmul_addcdiv_integers():
    s, t1, t2 = (make(4, dtype=torch.int32) for _ in range(3))
    check("addcmul", torch.addcmul, s, t1, t2, value=3)
    with pytest.raises(RuntimeError):
        run_gems("addcdiv", torch.addcdiv, s, t1, t2)
    check("addcmul", torch.addcmul, s, t1, t2, value=0.5, served=False)  # a float value: torch's rules


@pytest.mark.parametrize("dtype", FLOATS)
def test_lerp(dtype):
    a, b = make(3, 5, dtype=dtype, specials=True), make(5, dtype=dtype)
    check("lerp", torch.lerp, a, b, 0.3)
    check("lerp", torch.lerp, a, b, 0.75)
    w = torch.tensor([-0.5, 0.0, 0.49, 0.5, 1.0], device=DEVICE).to(dtype)
    check("lerp", torch.lerp, a, b, w)
    check("lerp", lambda x, y: x.lerp_(y, 0.9), a, b)
    # lerp at the end points is exact
    finite = make(3, 5, dtype=dtype)
    got, _ = run_gems("lerp", torch.lerp, finite, b, torch.ones(5, dtype=dtype, device=DEVICE))
    assert torch.equal(got, b.expand(3, 5))
    got, _ = run_gems("lerp", torch.lerp, finite, b, 0.0)
    assert torch.equal(got, finite)


def test_lerp_mixed_dtypes_is_torchs_error():
    with pytest.raises(RuntimeError):
        run_gems("lerp", torch.lerp, make(3), make(3, dtype=torch.float16), 0.5)

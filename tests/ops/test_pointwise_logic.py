"""Comparisons, logical and bitwise ops, where and clamp."""
import pytest
import torch

from tests.ops._pointwise_check import check, make, run_gems
from tests.util import DEVICE

CMP = ["eq", "ne", "lt", "le", "gt", "ge"]


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.bfloat16, torch.float16),
                                    (torch.int32, torch.float16), (torch.int8, torch.uint8), (torch.bool, torch.bool)])
def test_comparisons(dtypes):
    a = make(3, 5, dtype=dtypes[0], specials=dtypes[0] == torch.float32)
    b = make(5, dtype=dtypes[1])
    b.view(-1)[:2] = a.view(-1)[:2].to(b.dtype)  # some equal elements
    for name in CMP:
        fn = getattr(torch, name)
        check(name, fn, a, b)
        check(name, fn, a.t() if a.dim() > 1 else a, 1)
    check("lt", torch.lt, make(4, dtype=torch.int32), 2.5)
    check("eq", torch.eq, make(4, dtype=torch.uint8, high=255), 300)  # the scalar wraps to uint8, as in torch
    check("ge", lambda x, y: torch.ge(x, y, out=torch.empty(3, 5, dtype=torch.float32, device=DEVICE)), a, b)
    check("gt", lambda x, y: x.gt_(y), a, b)


@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor"])
def test_logical_binary(name):
    fn = getattr(torch, name)
    x = make(3, 4, specials=True)
    x.view(-1)[5:8] = 0
    check(name, fn, x, make(4, dtype=torch.int32, low=-1, high=2))
    check(name, fn, make(3, 4, dtype=torch.bool), make(3, 1, dtype=torch.bool))
    check(name, fn, x.t(), make(4, 3, dtype=torch.bfloat16))
    check(name, lambda a, b: getattr(a, name + "_")(b), x, make(4, dtype=torch.bool))
    check(name, lambda a, b: fn(a, b, out=torch.empty(3, 4, dtype=torch.int8, device=DEVICE)), x, x)


def test_logical_not():
    x = make(3, 4, specials=True)
    check("logical_not", torch.logical_not, x)
    check("logical_not", torch.logical_not, make(5, dtype=torch.int8, low=-1, high=2))
    check("logical_not", lambda a: a.logical_not_(), make(5, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.int8, torch.bool])
def test_bitwise(dtype):
    a, b = make(3, 5, dtype=dtype, low=-100, high=100), make(5, dtype=dtype, low=-100, high=100)
    for name in ("bitwise_and", "bitwise_or", "bitwise_xor"):
        check(name, getattr(torch, name), a, b)
        check(name, getattr(torch, name), a, True if dtype == torch.bool else 6)
        check(name, lambda x, y: getattr(x, name + "_")(y), a, b)
    check("bitwise_not", torch.bitwise_not, a.t())


def test_bitwise_on_floats_is_torchs_error():
    with pytest.raises(RuntimeError):
        run_gems("bitwise_and", torch.bitwise_and, make(3), make(3))


def test_where():
    cond = make(3, 5, dtype=torch.bool)
    check("where", torch.where, cond, make(3, 5, specials=True), make(5))
    check("where", torch.where, cond, make(5, 3, dtype=torch.bfloat16).t(), make(5, dtype=torch.float16))
    check("where", torch.where, cond, make(3, 5, dtype=torch.int32), 2.5)  # scalar overloads reach where.self
    check("where", torch.where, cond, 1, make(1, dtype=torch.int64))
    check("where", torch.where, cond, make(3, 5, dtype=torch.int32), make(5, dtype=torch.bfloat16))
    check("where", torch.where, cond[0], make(5, dtype=torch.float16), torch.tensor(0.5, device=DEVICE))
    check("where", lambda c, x, y: torch.where(c, x, y, out=torch.empty(3, 5, device=DEVICE)), cond, make(3, 5),
          make(3, 5), exact=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32])
def test_clamp(dtype):
    x = make(4, 6, dtype=dtype, specials=dtype == torch.float32, low=-10, high=10)
    check("clamp", torch.clamp, x, -1, 2)
    check("clamp", torch.clamp, x, min=0)
    check("clamp", torch.clamp, x.t(), max=1)
    check("clamp", torch.clamp, x, 3, -3)  # min > max gives max
    check("clamp", torch.clamp, x, make(6, dtype=dtype), make(4, 1, dtype=dtype))
    check("clamp_min", torch.clamp_min, x, 0.5)
    check("clamp_max", torch.clamp_max, x, make(6, dtype=dtype))
    check("clamp", lambda t: t.clamp_(-2, 2), x)


def test_clamp_nan_bounds_and_errors():
    x = make(2, 4, specials=True)
    # a lone NaN scalar bound: torch's answer differs between versions (x on 2.11, NaN on
    # 2.13), so torch's kernel runs and the result is torch's bit for bit
    check("clamp", torch.clamp, x, min=float("nan"), served=False, exact=True)
    check("clamp", torch.clamp, x, max=float("nan"), served=False, exact=True)
    check("clamp", torch.clamp, x, float("nan"), 1.0)  # with both bounds given gems serves a NaN bound
    check("clamp", torch.clamp, x, -1.0, float("nan"))
    nan_bound = torch.tensor([float("nan"), 0.0, 1.0, -1.0], device=DEVICE)
    check("clamp", torch.clamp, x, nan_bound, None)
    check("clamp", torch.clamp, make(4, dtype=torch.int32), 0.5, 2.5)  # promotes to float
    with pytest.raises(RuntimeError):
        run_gems("clamp", torch.clamp, x)
    with pytest.raises(RuntimeError):
        run_gems("clamp", lambda t: t.clamp_(0.5), make(4, dtype=torch.int32))

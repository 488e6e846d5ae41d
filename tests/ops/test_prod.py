"""prod against torch: one dim or all, keepdim, dtype=, integers in int64, empty (1), NaN, 0-d."""
import pytest
import torch

import gemsops
from gemsops.ops import prod as P
from tests.util import DEVICE, FLOAT_DTYPES, assert_close, reference


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,dim", [((6, 12), 1), ((12, 6), 0), ((3, 8, 4), 1)])
def test_prod_float(shape, dim, dtype):
    # values near 1 keep the product in range
    x = (1 + 0.1 * torch.randn(shape, device=DEVICE)).to(dtype)
    for keepdim in (False, True):
        got = P.prod_dim.__wrapped__(x, dim, keepdim)
        assert_close(got, reference(torch.prod, x, dim, keepdim, out_dtype=dtype), dtype, scale=2)
    assert_close(P.prod_all.__wrapped__(x), reference(torch.prod, x, out_dtype=dtype), dtype, scale=4)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.bool, torch.int64])
def test_prod_integers(dtype):
    x = torch.randint(0 if dtype in (torch.uint8, torch.bool) else -3, 3, (5, 7), device=DEVICE).to(dtype)
    got = P.prod_dim.__wrapped__(x, 1)
    assert got.dtype == torch.int64
    torch.testing.assert_close(got, torch.prod(x, 1), atol=0, rtol=0)
    assert P.prod_all.__wrapped__(x).item() == torch.prod(x).item()


def test_prod_dtype_nan_empty_0d_noncontiguous():
    h = (1 + 0.1 * torch.randn(4, 9, device=DEVICE)).half()
    got = P.prod_dim.__wrapped__(h, 1, dtype=torch.float32)
    assert got.dtype == torch.float32
    assert_close(got, torch.prod(h.float(), 1))
    x = torch.randn(4, 6, device=DEVICE)
    x[2, 2] = float("nan")
    torch.testing.assert_close(P.prod_dim.__wrapped__(x, 1), torch.prod(x, 1), equal_nan=True)
    e = torch.zeros(3, 0, device=DEVICE)
    torch.testing.assert_close(P.prod_dim.__wrapped__(e, 1), torch.ones(3, device=DEVICE))
    assert P.prod_all.__wrapped__(e).item() == 1
    s = torch.tensor(-2.0, device=DEVICE)
    assert P.prod_all.__wrapped__(s).item() == -2.0 and P.prod_dim.__wrapped__(s, 0).item() == -2.0
    t = torch.randn(7, 5, device=DEVICE).t()
    assert_close(P.prod_dim.__wrapped__(t, 1), torch.prod(t, 1))
    with gemsops.use_gems(include=["prod"]):
        got = torch.prod(t, 0)
    assert_close(got, torch.prod(t, 0))

"""linalg_vector_norm against torch: ord 2, 1, inf, -inf, 0, other p; dims, keepdim, dtype=."""
import math

import pytest
import torch

import gemsops
from gemsops.ops import vector_norm as N
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, reference

ORDS = [2, 1, math.inf, -math.inf, 0, 3.0, 0.5]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("ord", ORDS)
def test_vector_norm(ord, dtype):
    x = torch.randn(6, 30, device=DEVICE).to(dtype)
    x[0, :5] = 0
    for dims, keepdim in (([1], False), ([0], True), (None, False)):
        got = N.linalg_vector_norm.__wrapped__(x, ord, dims, keepdim)
        ref = reference(torch.linalg.vector_norm, x, ord, dims, keepdim, out_dtype=dtype)
        assert got.dtype == dtype and got.shape == ref.shape
        assert_close(got, ref, dtype, scale=2 if ord not in (3.0, 0.5) else 20)


def test_vector_norm_dtype_noncontiguous_nan_0d_empty():
    h = torch.randn(4, 40, device=DEVICE).half()
    got = N.linalg_vector_norm.__wrapped__(h, 2, [1], dtype=torch.float32)
    assert got.dtype == torch.float32
    assert_close(got, torch.linalg.vector_norm(h.float(), 2, 1))
    t = torch.randn(9, 5, 3, device=DEVICE).permute(2, 0, 1)
    for ord in (2, 1, math.inf):
        assert_close(N.linalg_vector_norm.__wrapped__(t, ord, [1, 2]),
                     reference(torch.linalg.vector_norm, t, ord, [1, 2], out_dtype=t.dtype))
    y = torch.randn(3, 6, device=DEVICE)
    y[1, 2] = float("nan")
    for ord in (2, math.inf, 1):
        torch.testing.assert_close(N.linalg_vector_norm.__wrapped__(y, ord, [1]),
                                   torch.linalg.vector_norm(y, ord, 1), equal_nan=True)
    s = torch.tensor(-3.0, device=DEVICE)
    assert N.linalg_vector_norm.__wrapped__(s).item() == 3.0
    e = torch.zeros(2, 0, device=DEVICE)
    torch.testing.assert_close(N.linalg_vector_norm.__wrapped__(e, 2, [1]), torch.zeros(2, device=DEVICE))
    i = torch.randint(0, 4, (3, 3), device=DEVICE)
    with gemsops.use_gems(include=["linalg_vector_norm"]):
        with pytest.raises(RuntimeError):
            torch.linalg.vector_norm(e, math.inf, 1)  # no identity for max over nothing
        with pytest.raises(RuntimeError):
            torch.linalg.vector_norm(i)
        neg = torch.linalg.vector_norm(y.abs() + 1, -1.5, 1)  # negative p: native
        d = torch.linalg.vector_norm(y.double(), 3, 1)  # fp64 general p: native
        got = (torch.linalg.vector_norm(t, dim=(1, 2)), torch.norm(h.float(), dim=1))
    torch.testing.assert_close(neg, torch.linalg.vector_norm(y.abs() + 1, -1.5, 1), equal_nan=True)
    torch.testing.assert_close(d, torch.linalg.vector_norm(y.double(), 3, 1), equal_nan=True)
    assert_close(got[0], torch.linalg.vector_norm(t, dim=(1, 2)))
    assert_close(got[1], torch.norm(h.float(), dim=1))


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.parametrize("shape,dim", [((8192, 8192), 1), ((1 << 24,), 0)])
@pytest.mark.big_memory
def test_vector_norm_large(shape, dim):
    x = torch.randn(shape, device=DEVICE).bfloat16()
    assert_close(N.linalg_vector_norm.__wrapped__(x, 2, [dim]),
                 reference(torch.linalg.vector_norm, x, 2, [dim], out_dtype=x.dtype))

import pytest
import torch

import gemsops
import sys

import gemsops.ops.scatter  # noqa: F401

S = sys.modules["gemsops.ops.scatter"]
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn, reference

kscatter, kvalue, kadd = S.scatter.__wrapped__, S.scatter_value.__wrapped__, S.scatter_add.__wrapped__
kscatter_, kvalue_, kadd_ = S.scatter_inplace.__wrapped__, S.scatter_value_inplace.__wrapped__, \
    S.scatter_add_inplace.__wrapped__


def unique_index(shape, dim, size):
    """Index with distinct targets along ``dim`` (plain scatter with duplicates is nondeterministic)."""
    perm = torch.argsort(torch.rand(*shape[:dim], size, *shape[dim + 1:], device=DEVICE), dim=dim)
    return perm.narrow(dim, 0, shape[dim])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int64, torch.bool])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_src_and_value(dtype, dim):
    x = randn(4, 5, 3).to(dtype)
    d = dim % 3
    ishape = [3, 4, 2]
    idx = unique_index(ishape, d, x.shape[d])
    src = randn(4, 5, 3).to(dtype)
    torch.testing.assert_close(kscatter(x, dim, idx, src), torch.scatter(x, dim, idx, src), rtol=0, atol=0)
    for v in ([True, False] if dtype == torch.bool else [-3, 0.1, float("-inf")] if dtype.is_floating_point else [7, 1]):
        torch.testing.assert_close(kvalue(x, dim, idx, v), torch.scatter(x, dim, idx, v), rtol=0, atol=0)
    y, z = x.clone(), x.clone()
    kscatter_(y, dim, idx, src)
    z.scatter_(dim, idx, src)
    torch.testing.assert_close(y, z, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32, torch.int64])
def test_scatter_add(dtype):
    x = randn(5, 6).to(dtype) if dtype.is_floating_point else torch.randint(-9, 9, (5, 6), dtype=dtype, device=DEVICE)
    src = randn(7, 6).to(dtype) if dtype.is_floating_point else torch.randint(-9, 9, (7, 6), dtype=dtype, device=DEVICE)
    idx = torch.randint(0, 5, (7, 4), device=DEVICE)  # duplicates: accumulated
    ref = reference(torch.scatter_add, x, 0, idx, src, out_dtype=dtype)
    # each duplicate's add rounds to a 16-bit dtype (as in torch's own kernels), up to 8
    # adds per element, where the float64 reference rounds once
    scale = 8 if dtype in (torch.float16, torch.bfloat16) else 1
    assert_close(kadd(x, 0, idx, src), ref, scale=scale)
    y = x.clone()
    r = kadd_(y, 0, idx, src)
    assert r is y
    assert_close(y, ref, scale=scale)


def test_scatter_noncontiguous_and_empty():
    x = randn(6, 4).t()
    src = randn(5, 6).t()
    idx = unique_index([3, 4], 1, 6)
    torch.testing.assert_close(kscatter(x, 1, idx, src), torch.scatter(x, 1, idx, src), rtol=0, atol=0)
    assert_close(kadd(x, 1, idx, src), torch.scatter_add(x, 1, idx, src))
    e = torch.empty(0, 4, dtype=torch.long, device=DEVICE)
    torch.testing.assert_close(kscatter(x, 0, e, src), x, rtol=0, atol=0)


def test_scatter_native_routes():
    x = randn(3, 4)
    with pytest.raises(RuntimeError):
        S.scatter(x, 0, torch.zeros(2, 2, dtype=torch.long, device=DEVICE), randn(2, 2, dtype=torch.float16))
    if not ON_GPU:
        with pytest.raises(RuntimeError):
            S.scatter_add(x, 0, torch.tensor([[3]], device=DEVICE), randn(1, 1))
    i8 = torch.ones(3, 4, dtype=torch.int8, device=DEVICE)
    idx = torch.tensor([[0, 1]], device=DEVICE)
    torch.testing.assert_close(S.scatter_add(i8, 0, idx, i8), torch.scatter_add(i8, 0, idx, i8))
    torch.testing.assert_close(S.scatter_value(i8, 0, idx, 2.5), torch.scatter(i8, 0, idx, 2.5))


def test_scatter_through_enable(tmp_path):
    log = tmp_path / "log"
    probs = randn(2, 6)
    sorted_idx = torch.argsort(probs, dim=-1)
    remove = torch.rand(2, 6, device=DEVICE) > 0.5
    gemsops.only_enable(include=["scatter", "scatter_add"], record=True, path=log)
    r = remove.scatter(1, sorted_idx, remove)  # top-p sampling
    a = torch.zeros(3, device=DEVICE).scatter_add_(0, torch.tensor([0, 2, 0], device=DEVICE), torch.ones(3, device=DEVICE))
    gemsops.disable()
    torch.testing.assert_close(r, remove.scatter(1, sorted_idx, remove))
    torch.testing.assert_close(a, torch.tensor([2.0, 0.0, 1.0], device=DEVICE))
    text = log.read_text()
    assert "aten::scatter.src" in text and "aten::scatter_add_" in text


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_scatter_large():
    x = randn(64, 128256, dtype=torch.bfloat16)
    idx = torch.argsort(torch.rand(64, 128256, device=DEVICE), dim=-1)
    torch.testing.assert_close(kscatter(x, 1, idx, x), torch.scatter(x, 1, idx, x), rtol=0, atol=0)
    tgt = torch.randint(0, 1000, (1_000_000,), device=DEVICE)
    src = randn(1_000_000)
    assert_close(kadd(torch.zeros(1000, device=DEVICE), 0, tgt, src),
                 reference(torch.scatter_add, torch.zeros(1000, device=DEVICE), 0, tgt, src, out_dtype=torch.float32), scale=10)

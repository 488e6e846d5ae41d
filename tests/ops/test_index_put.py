import sys

import pytest
import torch

import gemsops
import gemsops.ops.index_put  # noqa: F401
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn, reference

P = sys.modules["gemsops.ops.index_put"]
kput_, kput, kimpl = P.index_put_.__wrapped__, P.index_put.__wrapped__, P.index_put_impl_.__wrapped__


def I(*vals, dtype=torch.int64):
    return torch.tensor(vals, dtype=dtype, device=DEVICE)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int64, torch.bool])
def test_index_put_overwrite(dtype):
    x = randn(4, 5, 3).to(dtype)
    cases = [([I(3, -2, 0)], randn(3, 5, 3)), ([None, I(4, 1)], randn(2, 1)), ([I(0, 2), I(1, -2)], randn(3)),
             ([I(0, 2), None, I(1, 2, dtype=torch.int32)], randn(2, 5)), ([I(1)], randn(()))]
    for indices, v in cases:
        v = v.to(dtype)
        ref = torch.ops.aten.index_put(x, indices, v)
        torch.testing.assert_close(kput(x, indices, v), ref, rtol=0, atol=0)
        y = x.clone()
        assert kput_(y, indices, v) is y
        torch.testing.assert_close(y, ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int64, torch.bool])
def test_index_put_overwrite_repeated_indices(dtype):
    # Row 3 is written three times (3, -1, 3). Which write lands is unspecified (torch's
    # docs) and differs between runs on CUDA, for torch's kernel too, so each element of
    # that row must hold the value one of the writes put there; the rest is exact.
    x = randn(4, 5, 3).to(dtype)
    idx = I(3, -1, 0, 3)
    v = randn(4, 5, 3).to(dtype)
    ref = torch.ops.aten.index_put(x, [idx], v)
    y = x.clone()
    assert kput_(y, [idx], v) is y
    for got in (kput(x, [idx], v), y):
        torch.testing.assert_close(got[:3], ref[:3], rtol=0, atol=0)
        assert (got[3] == v[[0, 1, 3]]).any(0).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32])
def test_index_put_accumulate_duplicates(dtype):
    x = randn(5, 4).to(dtype)
    idx = [I(1, 3, 1, 1, -4)]
    v = randn(5, 4).to(dtype)
    ref = reference(torch.ops.aten.index_put, x, idx, v, True, out_dtype=dtype)
    assert_close(kput(x, idx, v, True), ref)
    y = x.t().contiguous().t()  # non-contiguous target
    kimpl(y, idx, v, True, False)
    assert_close(y, ref)


def test_index_put_native_routes():
    x = randn(4, 3)
    m = x[:, 0] > 0
    y, z = x.clone(), x.clone()
    P.index_put_(y, [m], torch.tensor(0.0, device=DEVICE))
    z[m] = 0.0
    torch.testing.assert_close(y, z)
    with pytest.raises(RuntimeError):
        P.index_put(x, [I(0, 1)], randn(3, 3))  # shape mismatch
    with pytest.raises(RuntimeError):
        P.index_put(x, [I(0)], randn(1, 3, dtype=torch.float16))  # dtype mismatch
    if not ON_GPU:
        with pytest.raises(IndexError):
            P.index_put(x, [I(4)], randn(3))


def test_setitem_through_enable(tmp_path):
    log = tmp_path / "log"
    x = randn(6, 4)
    ref = x.clone()
    ref[torch.tensor([0, 5])] = 1.5
    ref[:, torch.tensor([2])] += 1.0
    ref[1, 3] += 4.0
    gemsops.only_enable(include=["index_put"], record=True, path=log)
    x[I(0, 5)] = 1.5
    x[:, I(2)] += 1.0
    x.index_put_((I(1, 1), I(3, 3)), torch.full((2,), 2.0, device=DEVICE), accumulate=True)
    gemsops.disable()
    torch.testing.assert_close(x, ref)
    assert "aten::index_put_" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_index_put_large():
    x = torch.zeros(32000, 4096, dtype=torch.bfloat16, device=DEVICE)
    idx = torch.randint(0, 32000, (8192,), device=DEVICE)
    v = randn(8192, 4096, dtype=torch.bfloat16)
    ref = reference(torch.ops.aten.index_put, x, [idx], v, True, out_dtype=torch.bfloat16)
    assert_close(kput(x, [idx], v, True), ref, scale=4)

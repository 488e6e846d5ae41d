import pytest
import torch

import gemsops
from gemsops.ops.index import index
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn

kindex = index.__wrapped__


def I(*vals, dtype=torch.int64):
    return torch.tensor(vals, dtype=dtype, device=DEVICE)


def check(x, indices, kernel=True):
    ref = torch.ops.aten.index.Tensor(x, indices)
    got = (kindex if kernel else index)(x, indices)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int64, torch.bool])
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32])
def test_index_patterns(dtype, idx_dtype):
    x = randn(4, 5, 6).to(dtype)
    a = I(3, -1, 0, 2, dtype=idx_dtype)
    b = I(4, -5, 1, 1, dtype=idx_dtype)
    check(x, [a])                      # x[a]
    check(x, [None, b])                # x[:, b]
    check(x, [None, None, a])          # x[..., a]
    check(x, [a, b])                   # adjacent pair
    check(x, [a, None, b])             # non-adjacent: broadcast dims first
    check(x, [a[:, None], b[None, :2]])  # broadcasting index tensors -> (4, 2) block
    check(x, [None, b.reshape(2, 2), a.reshape(2, 2).abs() % 6])
    check(x, [a, b, I(5, 0, -6, 3, dtype=idx_dtype)])


def test_index_noncontiguous_empty_0d():
    x = randn(6, 5, 4).permute(2, 0, 1)  # (4, 6, 5)
    check(x, [None, I(5, 0)])
    check(x, [I(1, 3), None, I(2, 4)])
    check(x, [I(1, 2, 3, 0)[::2]])
    check(x, [torch.empty(0, dtype=torch.long, device=DEVICE)])
    check(x, [torch.tensor(2, device=DEVICE)])
    check(torch.empty(0, 3, device=DEVICE), [None, I(2)])


def test_index_native_routes():
    x = randn(4, 3)
    check(x, [x[:, 0] > 0], kernel=False)  # bool mask
    check(x, [torch.tensor([1, 0, 1, 0], dtype=torch.uint8, device=DEVICE).bool()], kernel=False)
    if not ON_GPU:
        for bad in (4, -5):
            with pytest.raises(IndexError):
                index(x, [I(0, bad)])


def test_index_through_enable(tmp_path):
    log = tmp_path / "log"
    hidden = randn(2, 5, 3)
    last = I(4, 2)
    gemsops.only_enable(include=["index"], record=True, path=log)
    r = hidden[torch.arange(2, device=DEVICE), last]  # pooled last-token states
    gemsops.disable()
    torch.testing.assert_close(r, torch.stack([hidden[0, 4], hidden[1, 2]]), rtol=0, atol=0)
    assert "aten::index.Tensor" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_index_large():
    x = randn(8, 4096, 4096, dtype=torch.bfloat16)
    idx = torch.randint(-4096, 4096, (2048,), device=DEVICE)
    check(x, [None, idx])
    check(x, [torch.arange(8, device=DEVICE)[:, None], idx[None, :100]])

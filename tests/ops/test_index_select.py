import pytest
import torch

import gemsops
from gemsops.ops.index_select import index_select, index_select_out

kis, kis_out = index_select.__wrapped__, index_select_out.__wrapped__  # no silent native fallback
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn

DTYPES = FLOAT_DTYPES + [torch.int32, torch.bool]


def make(shape, dtype):
    if dtype == torch.bool:
        return torch.rand(shape, device=DEVICE) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-100, 100, shape, dtype=dtype, device=DEVICE)
    return randn(*shape, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape,dim", [((7, 5), 0), ((7, 5), 1), ((3, 6, 4), 1), ((3, 6, 4), -1), ((9,), 0)])
def test_index_select(dtype, idx_dtype, shape, dim):
    x = make(shape, dtype)
    idx = torch.randint(0, x.shape[dim], (11,), dtype=idx_dtype, device=DEVICE)
    torch.testing.assert_close(kis(x, dim, idx), torch.index_select(x, dim, idx), rtol=0, atol=0)


def test_index_select_noncontiguous_and_0d_index():
    x = randn(6, 8).t()[1:]  # (7, 6), strides (1, 8)
    idx = torch.tensor([3, 0, 3, 6], device=DEVICE)[::2]
    for dim in (0, 1):
        torch.testing.assert_close(kis(x, dim, idx), torch.index_select(x, dim, idx), rtol=0, atol=0)
    i0 = torch.tensor(2, device=DEVICE)
    torch.testing.assert_close(kis(x, 1, i0), torch.index_select(x, 1, i0), rtol=0, atol=0)


def test_index_select_empty_and_out():
    x = randn(4, 3)
    e = torch.empty(0, dtype=torch.long, device=DEVICE)
    assert kis(x, 0, e).shape == (0, 3)
    assert index_select(torch.empty(0, 3, device=DEVICE), 1, torch.tensor([2], device=DEVICE)).shape == (0, 1)
    idx = torch.tensor([2, 1], device=DEVICE)
    out = torch.empty(2, 3, device=DEVICE)
    r = kis_out(x, 0, idx, out=out)
    assert r.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, x[[2, 1]], rtol=0, atol=0)
    wrong = torch.empty(5, device=DEVICE)  # torch resizes it: routed to native
    index_select_out(x, 0, idx, out=wrong)
    torch.testing.assert_close(wrong, x[[2, 1]], rtol=0, atol=0)


def test_index_select_out_of_range_raises_like_torch():
    x = randn(4, 3)
    for bad in ([4], [-1]):
        idx = torch.tensor(bad, device=DEVICE)
        if ON_GPU:
            continue  # device-side assert, as torch's own kernel
        with pytest.raises(IndexError):
            index_select(x, 0, idx)
    with pytest.raises((IndexError, RuntimeError)):
        index_select(x, 2, torch.tensor([0], device=DEVICE))


def test_index_select_repeated_signature():
    # later calls with one signature take the planned launch: new index values (and an
    # out-of-range one on a CPU vendor, which torch rejects) are handled on every call
    x = randn(6, 5)
    for values in ([5, 0, 2], [1, 1, 4], [3, 2, 0]):
        idx = torch.tensor(values, device=DEVICE)
        torch.testing.assert_close(kis(x, -2, idx), x[values], rtol=0, atol=0)
    if not ON_GPU:
        with pytest.raises(IndexError):
            index_select(x, -2, torch.tensor([0, 6, 1], device=DEVICE))
    y = randn(6, 5)  # same layout, other tensor
    torch.testing.assert_close(kis(y, -2, torch.tensor([4, 4, 0], device=DEVICE)), y[[4, 4, 0]], rtol=0, atol=0)


def test_index_select_routed_through_enable(tmp_path):
    x, idx = randn(5, 4), torch.tensor([4, 0], device=DEVICE)
    log = tmp_path / "log"
    gemsops.only_enable(include=["index_select"], record=True, path=log)
    r = torch.index_select(x, 0, idx)
    gemsops.disable()
    torch.testing.assert_close(r, x[[4, 0]], rtol=0, atol=0)
    assert "aten::index_select" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_index_select_large():
    x = randn(32000, 4096, dtype=torch.bfloat16)
    idx = torch.randint(0, 32000, (8192,), device=DEVICE)
    torch.testing.assert_close(kis(x, 0, idx), x[idx], rtol=0, atol=0)
    torch.testing.assert_close(index_select(x, 1, idx[:100] % 4096), torch.index_select(x, 1, idx[:100] % 4096))

"""mean against torch: dims, keepdim, dtype=, non-contiguous, NaN, empty (NaN), 0-d, integer errors."""
import pytest
import torch

import gemsops
from gemsops.ops import mean as Mn
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, reference


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.float64])
@pytest.mark.parametrize("shape,dims,keepdim", [((7, 33), [1], False), ((33, 7), [0], True),
                                                ((3, 10, 4), [0, 2], False), ((5, 6), None, False)])
def test_mean(shape, dims, keepdim, dtype):
    x = torch.randn(shape, device=DEVICE).to(dtype) + 3
    got = Mn.mean_dim.__wrapped__(x, dims, keepdim)
    ref = reference(torch.mean, x, dims if dims else list(range(len(shape))), keepdim, out_dtype=dtype)
    assert got.dtype == dtype
    assert_close(got, ref, dtype)
    assert_close(Mn.mean_all.__wrapped__(x), reference(torch.mean, x, out_dtype=dtype), dtype)


def test_mean_dtype_argument_and_ints():
    h = torch.randn(4, 50, device=DEVICE).half()
    got = Mn.mean_dim.__wrapped__(h, [1], dtype=torch.float32)
    assert got.dtype == torch.float32
    assert_close(got, torch.mean(h.float(), 1))
    i = torch.randint(-5, 5, (4, 9), device=DEVICE)
    assert_close(Mn.mean_dim.__wrapped__(i, [1], dtype=torch.float32), torch.mean(i.float(), 1))
    with gemsops.use_gems(include=["mean"]):
        with pytest.raises(RuntimeError):
            torch.mean(i, 1)  # torch: could not infer output dtype
        with pytest.raises(RuntimeError):
            torch.mean(i)


def test_mean_noncontiguous_nan_empty_0d():
    x = torch.randn(9, 6, device=DEVICE).t()[:, ::2]
    assert_close(Mn.mean_dim.__wrapped__(x, [0]), reference(torch.mean, x, [0], out_dtype=x.dtype))
    y = torch.randn(3, 5, device=DEVICE)
    y[1, 1] = float("nan")
    torch.testing.assert_close(Mn.mean_dim.__wrapped__(y, [1]), torch.mean(y, 1), equal_nan=True)
    e = torch.zeros(2, 0, device=DEVICE)
    torch.testing.assert_close(Mn.mean_dim.__wrapped__(e, [1]), torch.mean(e, 1), equal_nan=True)
    assert Mn.mean_all.__wrapped__(e).isnan()
    s = torch.tensor(4.0, device=DEVICE)
    assert Mn.mean_dim.__wrapped__(s, [0]).item() == 4.0 and Mn.mean_all.__wrapped__(s).item() == 4.0
    out = torch.empty(3, device=DEVICE)
    assert Mn.mean_out.__wrapped__(y, [0], out=torch.empty(5, device=DEVICE)).shape == (5,)
    with gemsops.use_gems(include=["mean"]):
        torch.mean(y, 0, out=out[:0])  # resized by torch: native path
    assert out[:0].numel() == 0


def test_mean_through_enable(tmp_path):
    log = tmp_path / "ops.txt"
    x = torch.randn(6, 10, device=DEVICE)
    gemsops.enable(record=True, path=log)
    try:
        a, b = x.mean(-1, keepdim=True), x.mean()
    finally:
        gemsops.disable()
    assert "aten::mean.dim" in log.read_text()
    assert_close(a, x.mean(-1, keepdim=True))
    assert_close(b, x.mean())


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.parametrize("shape,dim", [((16384, 8192), 1), ((8192, 4096), 0), ((1 << 24,), 0)])
@pytest.mark.big_memory
def test_mean_large(shape, dim):
    x = torch.randn(shape, device=DEVICE).bfloat16()
    assert_close(Mn.mean_dim.__wrapped__(x, [dim]), reference(torch.mean, x, [dim], out_dtype=x.dtype))

"""cumsum against torch: every dim, dtype=, integer promotion, non-contiguous, in-place, out=, empty, 0-d."""
import importlib

import pytest
import torch

import gemsops
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, reference

C = importlib.import_module("gemsops.ops.cumsum")
R = importlib.import_module("gemsops.ops._reduction")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,dim", [((5, 150), 1), ((150, 5), 0), ((3, 40, 6), 1), ((3, 4, 20), -1), ((70,), 0)])
def test_cumsum_float(shape, dim, dtype):
    x = torch.randn(shape, device=DEVICE).to(dtype)
    got = C.cumsum.__wrapped__(x, dim)
    assert got.dtype == dtype
    assert_close(got, reference(torch.cumsum, x, dim, out_dtype=dtype), dtype, scale=4)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.bool, torch.int64])
def test_cumsum_integers(dtype):
    x = torch.randint(0 if dtype in (torch.uint8, torch.bool) else -100, 100, (4, 90), device=DEVICE).to(dtype)
    for dim in (0, 1):
        got = C.cumsum.__wrapped__(x, dim)
        ref = torch.cumsum(x, dim)
        assert got.dtype == ref.dtype == torch.int64
        assert torch.equal(got, ref)


def test_cumsum_dtype_noncontiguous_nan():
    h = torch.randn(4, 100, device=DEVICE).half()
    got = C.cumsum.__wrapped__(h, 1, dtype=torch.float32)
    assert got.dtype == torch.float32
    assert_close(got, torch.cumsum(h.float(), 1))
    i = torch.randint(-5, 5, (3, 9), device=DEVICE, dtype=torch.int32)
    assert_close(C.cumsum.__wrapped__(i, 1, dtype=torch.float32), torch.cumsum(i, 1, dtype=torch.float32))
    for x in (torch.randn(30, 7, device=DEVICE).t(), torch.randn(5, 6, 7, device=DEVICE).permute(2, 0, 1),
              torch.randn(6, 40, device=DEVICE)[:, ::3], torch.randn(4, 6, 8, device=DEVICE)[:, 1:5, ::2]):
        for dim in range(x.dim()):
            assert_close(C.cumsum.__wrapped__(x, dim), reference(torch.cumsum, x, dim, out_dtype=x.dtype), scale=2)
    y = torch.randn(3, 8, device=DEVICE)
    y[1, 3] = float("nan")
    torch.testing.assert_close(C.cumsum.__wrapped__(y, 1), torch.cumsum(y, 1), equal_nan=True)


def test_cumsum_inplace_out_empty_0d():
    x = torch.randn(6, 50, device=DEVICE)
    y = x.clone()
    r = C.cumsum_inplace.__wrapped__(y, 1)
    assert r is y
    assert_close(y, torch.cumsum(x, 1))
    yt = x.clone().t()
    C.cumsum_inplace.__wrapped__(yt, 1)
    assert_close(yt, torch.cumsum(x.t(), 1))
    out = torch.empty(6, 50, device=DEVICE)
    C.cumsum_out.__wrapped__(x, 0, out=out)
    assert_close(out, torch.cumsum(x, 0))
    e = torch.zeros(3, 0, device=DEVICE)
    assert C.cumsum.__wrapped__(e, 1).shape == (3, 0)
    s = torch.tensor(2.5, device=DEVICE)
    got = C.cumsum.__wrapped__(s, 0)
    assert got.shape == () and got.item() == 2.5
    with gemsops.use_gems(include=["cumsum"]):
        with pytest.raises(IndexError):
            torch.cumsum(x, 2)
        a = torch.cumsum(x, -1)
        b = x.cumsum(0, dtype=torch.float64)
    assert_close(a, torch.cumsum(x, -1))
    assert b.dtype == torch.float64


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.parametrize("shape,dim", [((4096, 4096), 1), ((4096, 4096), 0), ((2, 1 << 20), 1)])
@pytest.mark.big_memory
def test_cumsum_large(shape, dim):
    x = torch.rand(shape, device=DEVICE)
    assert_close(C.cumsum.__wrapped__(x, dim), reference(torch.cumsum, x, dim, out_dtype=x.dtype),
                 atol=1e-2, rtol=1e-4)


def test_cumsum_uncompilable_config_runs_native(monkeypatch):
    # a Triton release that rejects every candidate (the tuner raises) must give torch's answer
    def no_config(key, run, cold=False):
        raise RuntimeError("gemsops: no candidate config of scan_rows ran")

    monkeypatch.setattr(C._rows_tuner, "choose", no_config)
    monkeypatch.setattr(R, "_UNCOMPILABLE", set())
    x = torch.randn(3, 40, device=DEVICE)
    assert torch.equal(C.cumsum(x, 1), torch.cumsum(x, 1))
    y = x.clone()
    assert C.cumsum_inplace(y, 1) is y
    assert torch.equal(y, torch.cumsum(x, 1))
    assert R._UNCOMPILABLE  # remembered: later calls go straight to torch

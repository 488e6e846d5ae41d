"""var / std / var_mean / std_mean (correction overloads) against torch in float64."""
import importlib

import pytest
import torch

import gemsops
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, reference

V = importlib.import_module("gemsops.ops.var")


@pytest.mark.parametrize("onepass", [True, False])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.float64])
@pytest.mark.parametrize("shape,dims,keepdim", [((6, 40), [1], False), ((40, 6), [0], True),
                                                ((3, 10, 4), [0, 2], True), ((5, 9), None, False)])
def test_var_std(shape, dims, keepdim, dtype, onepass, monkeypatch):
    if not onepass:
        monkeypatch.setattr(V, "ONEPASS_MAX", 0)  # rows take the two-launch path too
    # an offset much larger than the spread: a one-pass sum of squares would lose it
    x = (torch.randn(shape, device=DEVICE) + 1000).to(dtype) if dtype != torch.bfloat16 else \
        torch.randn(shape, device=DEVICE).to(dtype)
    for corr in (None, 0, 1, 2):
        got = V.var.__wrapped__(x, dims, correction=corr, keepdim=keepdim)
        ref = reference(torch.var, x, dims, correction=corr, keepdim=keepdim, out_dtype=dtype)
        assert got.dtype == dtype and got.shape == ref.shape
        assert_close(got, ref, dtype, scale=2)
    s, m = V.std_mean.__wrapped__(x, dims, correction=1, keepdim=keepdim)
    rs, rm = reference(torch.std_mean, x, dims, correction=1, keepdim=keepdim)
    assert_close(s, rs.to(dtype), dtype, scale=2)
    assert_close(m, rm.to(dtype), dtype)
    assert m.dtype == dtype


def test_var_mean_and_odd_corrections():
    x = torch.randn(4, 7, device=DEVICE)
    v, m = V.var_mean.__wrapped__(x, [1], correction=0.5)
    rv, rm = torch.var_mean(x, 1, correction=0.5)
    assert_close(v, rv)
    assert_close(m, rm)
    # correction >= N: torch divides by max(0, N - correction) -> inf / nan
    for corr in (7, 9):
        torch.testing.assert_close(V.var.__wrapped__(x, [1], correction=corr),
                                   torch.var(x, 1, correction=corr), equal_nan=True)


def test_var_edge_cases():
    t = torch.randn(9, 5, device=DEVICE).t()
    assert_close(V.std.__wrapped__(t, [1]), reference(torch.std, t, [1], out_dtype=t.dtype))
    y = torch.randn(3, 6, device=DEVICE)
    y[0, 2] = float("nan")
    y[1, 1] = float("inf")
    torch.testing.assert_close(V.var.__wrapped__(y, [1]), torch.var(y, 1), equal_nan=True)
    s = torch.tensor(3.0, device=DEVICE)
    torch.testing.assert_close(V.var.__wrapped__(s, None, correction=0), torch.var(s, correction=0))
    e = torch.zeros(2, 0, device=DEVICE)
    with pytest.warns(UserWarning):
        ref = torch.var(e, 1)
    torch.testing.assert_close(V.var.__wrapped__(e, [1]), ref, equal_nan=True)
    assert V.var.__wrapped__(e, [0]).shape == (0,)
    i = torch.randint(0, 5, (3, 4), device=DEVICE)
    with gemsops.use_gems(include=["var", "std"]):
        with pytest.raises(RuntimeError):
            torch.var(i, 1)  # torch: floating point only


def test_var_through_enable(tmp_path):
    log = tmp_path / "ops.txt"
    x = torch.randn(6, 10, device=DEVICE)
    gemsops.enable(record=True, path=log)
    try:
        got = (x.var(1), x.std(0, unbiased=False), torch.var_mean(x, 1, keepdim=True))
    finally:
        gemsops.disable()
    text = log.read_text()
    assert "aten::var.correction" in text and "aten::std.correction" in text and "aten::var_mean.correction" in text
    assert_close(got[0], x.var(1))
    assert_close(got[1], x.std(0, unbiased=False))
    assert_close(got[2][0], torch.var_mean(x, 1, keepdim=True)[0])


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.parametrize("shape,dim", [((4096, 8192), 1), ((8192, 1024), 0), ((1 << 22,), 0)])
@pytest.mark.big_memory
def test_var_large(shape, dim):
    x = torch.randn(shape, device=DEVICE) * 3 + 100
    assert_close(V.var.__wrapped__(x, [dim]), reference(torch.var, x, [dim], out_dtype=x.dtype), scale=10)

import pytest
import torch

import gemsops
from gemsops.ops import triu_tril as T
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn

FUNCS = {"triu": (T.triu, torch.triu), "tril": (T.tril, torch.tril)}


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int64, torch.bool])
@pytest.mark.parametrize("diag", [0, 1, -2, 7, -9])
def test_tri(name, dtype, diag):
    mine, ref = FUNCS[name]
    x = randn(2, 5, 6).to(dtype)
    same(mine.__wrapped__(x, diag), ref(x, diag))


@pytest.mark.parametrize("name", FUNCS)
def test_tri_inplace_out_noncontiguous(name):
    mine, ref = FUNCS[name]
    inplace = getattr(T, name + "_").__wrapped__
    out_fn = getattr(T, name + "_out").__wrapped__
    x = randn(3, 4, 7).transpose(-1, -2)  # (3, 7, 4)
    same(mine.__wrapped__(x, 1), ref(x, 1))
    y = x.clone()
    r = inplace(x, -1)
    assert r is x
    same(x, ref(y, -1))
    out = torch.empty(3, 7, 4, device=DEVICE)
    out_fn(y, 2, out=out)
    same(out, ref(y, 2))
    full = torch.full((6, 6), float("-inf"), device=DEVICE)
    same(mine.__wrapped__(full, 1), ref(torch.full((6, 6), float("-inf"), device=DEVICE), 1))


def test_tri_edge_cases_native_routes():
    e = torch.empty(0, 3, device=DEVICE)
    same(T.triu.__wrapped__(e), torch.triu(e))
    with pytest.raises(RuntimeError):
        T.triu(randn(3))  # 1-D: torch's error
    bad = torch.empty(9, device=DEVICE)  # resized by torch
    x = randn(3, 3)
    T.tril_out(x, 0, out=bad)
    same(bad, torch.tril(x))


def test_causal_mask_through_enable(tmp_path):
    log = tmp_path / "log"
    gemsops.only_enable(include=["triu"], record=True, path=log)
    m = torch.full((5, 5), torch.finfo(torch.float32).min, device=DEVICE).triu(1)
    gemsops.disable()
    same(m, torch.full((5, 5), torch.finfo(torch.float32).min, device=DEVICE).triu(1))
    assert "aten::triu" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_tri_large():
    x = randn(4, 4096, 4096, dtype=torch.bfloat16)
    same(T.triu.__wrapped__(x, 1), torch.triu(x, 1))
    same(T.tril.__wrapped__(x, -3), torch.tril(x, -3))

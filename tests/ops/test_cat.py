import importlib

import pytest
import torch

import gemsops
from gemsops.ops.cat import cat, cat_out
from gemsops.runtime import Plans

kcat, kcat_out = cat.__wrapped__, cat_out.__wrapped__  # no silent native fallback
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int64, torch.bool])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_cat_dims(dtype, dim):
    xs = [randn(2, 3, 4).to(dtype) for _ in range(3)]
    xs[1] = torch.cat([xs[1]] * 2, dim)  # a different size along dim
    same(kcat(xs, dim), torch.cat(xs, dim))


def test_cat_many_inputs_and_noncontiguous():
    xs = [randn(3, 5)[:, i:i + 2] for i in range(3)] + [randn(4, 3).t()[:, :2]] * 3 + [randn(3, 1)]
    for dim in (0, 1):
        ys = xs if dim == 1 else [x.t() for x in xs]
        same(kcat(ys, dim), torch.cat(ys, dim))
    p = [randn(4, 3, 5).permute(1, 0, 2), randn(3, 4, 2)]  # outer dims not mergeable
    same(kcat(p, 2), torch.cat(p, 2))


def test_cat_inputs_of_very_different_widths_and_layouts():
    # each input gets its own run of column blocks (a 1-wide input next to a 1000-wide one);
    # inputs whose dims from ``dim`` on are one run of memory are copied without per-element
    # division, the others (a transposed tail) with it, in one launch or across launches
    wide, narrow = randn(3, 1000), randn(3, 1)
    same(kcat([narrow, wide, narrow], 1), torch.cat([narrow, wide, narrow], 1))
    same(kcat([wide.t(), narrow.t()], 0), torch.cat([wide.t(), narrow.t()], 0))
    tail = randn(2, 4, 3).transpose(1, 2)  # dims 1-2 of shape (3, 4) with strides (1, 3)
    flat = randn(2, 5, 4)
    for xs in ([tail, flat], [flat, tail, flat], [flat] * 5 + [tail], [tail] * 4 + [flat] * 3):
        same(kcat(xs, 1), torch.cat(xs, 1))


def test_cat_repeated_layouts_use_new_data():
    # repeated calls with one layout take a planned launch: each must read its own inputs
    for dim in (0, 1, -1):
        for _ in range(3):
            xs = [randn(4, 6)[:, 1:5], randn(4, 2), randn(8, 4).t()[:, :4] if dim == 0 else randn(4, 3)]
            if dim == 0:
                xs = [x[:, :2] for x in xs]
            same(kcat(xs, dim), torch.cat(xs, dim))
    # five inputs: a second launch with one input (the plan picks it out of the list)
    for _ in range(3):
        xs = [randn(3, 2) for _ in range(5)]
        same(kcat(xs, 1), torch.cat(xs, 1))
    # same shapes and strides, other dtypes: another plan, torch's promotion
    a, b = randn(2, 3), randn(2, 3)
    same(kcat([a, b], 0), torch.cat([a, b], 0))
    same(kcat([a.half(), b.double()], 0), torch.cat([a.half(), b.double()], 0))
    same(kcat([a.half(), b.half()], 0), torch.cat([a.half(), b.half()], 0))


def test_cat_reads_transposed_head_views_without_copying(monkeypatch):
    # rotary embeddings concatenate halves of q.view(b, s, h, d).transpose(1, 2): rows that
    # take two strides. They are read in place (no copy, so the launch is planned) and each
    # repeated call reads its own data
    cat_module = importlib.import_module("gemsops.ops.cat")  # the module, not the function
    monkeypatch.setattr(cat_module, "_PLANS", Plans())
    for _ in range(3):
        for batch in (1, 2):  # rows: (h, s) take two strides, (b, h, s) three
            q = randn(batch, 5, 3, 8).transpose(1, 2)
            xs = (-q[..., 4:], q[..., :4])
            same(kcat(xs, -1), torch.cat(xs, -1))
        mixed = [randn(3, 2, 5).transpose(0, 1), randn(2, 5, 3).transpose(1, 2), randn(2, 3, 5)]
        same(kcat(mixed, 2), torch.cat(mixed, 2))
    assert len(cat_module._PLANS) == 3
    # rows of four dims that no three groups serve: that input is copied (no plan), still right
    odd = [randn(2, 3, 4, 5, 6).permute(3, 2, 1, 0, 4), randn(5, 4, 3, 2, 6)]
    for _ in range(2):
        same(kcat(odd, 4), torch.cat(odd, 4))
    assert len(cat_module._PLANS) == 3


def test_cat_promotion_and_empty_rules():
    a = torch.ones(2, 3, dtype=torch.int64, device=DEVICE)
    b = randn(1, 3, dtype=torch.float16)
    c = torch.tensor([[True, False, True]], device=DEVICE)
    same(cat([a, b, c]), torch.cat([a, b, c]))
    legacy = torch.empty(0, dtype=torch.float64, device=DEVICE)  # skipped, but promotes
    same(kcat([legacy, b, legacy], 1), torch.cat([legacy, b, legacy], 1))
    e = torch.empty(0, 3, device=DEVICE)
    same(kcat([e, b.float(), e]), torch.cat([e, b.float(), e]))
    same(cat([e, e]), torch.cat([e, e]))
    same(kcat([b, torch.tensor([[float("nan"), float("inf"), -float("inf")]], device=DEVICE)]),
         torch.cat([b, torch.tensor([[float("nan"), float("inf"), -float("inf")]], device=DEVICE)]))


def test_cat_native_routes():
    with pytest.raises(RuntimeError):
        cat([randn(2, 3), randn(3, 2)], 0)
    with pytest.raises((RuntimeError, IndexError)):
        cat([torch.tensor(1.0, device=DEVICE)], 0)
    cl = randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    r = cat([cl, cl], 1)
    same(r, torch.cat([cl, cl], 1))
    assert r.stride() == torch.cat([cl, cl], 1).stride()


def test_cat_out():
    a, b = randn(2, 3), randn(1, 3)
    out = torch.empty(3, 3, dtype=torch.float64, device=DEVICE)
    r = kcat_out([a, b], 0, out=out)
    assert r.data_ptr() == out.data_ptr()
    same(out, torch.cat([a, b]).double())
    out2 = torch.empty(0, device=DEVICE)  # resized by torch
    cat_out([a, b], 0, out=out2)
    same(out2, torch.cat([a, b]))


def test_cat_through_enable(tmp_path):
    log = tmp_path / "log"
    x = randn(2, 2, 4)
    gemsops.only_enable(include=["cat"], record=True, path=log)
    r = torch.cat((-x[..., 2:], x[..., :2]), dim=-1)  # rotate_half
    gemsops.disable()
    same(r, torch.cat((-x[..., 2:], x[..., :2]), dim=-1))
    assert "aten::cat" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_cat_large():
    x = randn(4, 32, 2048, 128, dtype=torch.bfloat16)
    same(kcat((-x[..., 64:], x[..., :64]), -1), torch.cat((-x[..., 64:], x[..., :64]), -1))
    big = [randn(3_000_000) for _ in range(6)]
    same(kcat(big), torch.cat(big))
    kv = [randn(1, 8, 1000 + i, 128, dtype=torch.float16) for i in range(2)]
    same(kcat(kv, 2), torch.cat(kv, 2))

"""nll_loss forward/backward against torch (weight, ignore_index, reductions, 1-D and 2-D), and
F.cross_entropy with its backward through gems."""
import pytest
import torch
import torch.nn.functional as F

import gemsops
from gemsops.ops import nll_loss as L
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close

fwd = torch.ops.aten.nll_loss_forward
bwd = torch.ops.aten.nll_loss_backward


def _inputs(n, c, dtype):
    x = torch.randn(n, c, device=DEVICE).log_softmax(1).to(dtype)
    t = torch.randint(0, c, (n,), device=DEVICE)
    if n > 2:
        t[1] = -100
        t[2] = 3
    return x, t


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_nll_loss_2d(reduction, weighted, dtype):
    x, t = _inputs(70, 11, dtype)
    w = torch.rand(11, device=DEVICE).to(dtype) if weighted else None
    out, tw = L.nll_loss_forward.__wrapped__(x, t, w, reduction, -100)
    rout, rtw = fwd(x.double(), t, None if w is None else w.double(), reduction, -100)
    assert out.dtype == dtype and out.shape == rout.shape and tw.shape == rtw.shape
    assert_close(out, rout.to(dtype), dtype, scale=2)
    assert_close(tw, rtw.to(dtype), dtype)
    g = torch.randn(rout.shape, device=DEVICE).to(dtype)
    gin = L.nll_loss_backward.__wrapped__(g, x, t, w, reduction, -100, tw)
    rg = bwd(g.double(), x.double(), t, None if w is None else w.double(), reduction, -100, rtw)
    assert_close(gin, rg.to(dtype), dtype)


@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_nll_loss_1d_ignore_index_noncontiguous(reduction):
    # the ignored target's mean loss is 0 on CUDA and 0/0 = NaN on CPU; a zero weight gives NaN on both
    x = torch.randn(7, device=DEVICE).log_softmax(0)
    w0 = torch.rand(7, device=DEVICE) + 0.5
    w0[2] = 0
    for target, w in ((2, None), (5, None), (2, torch.rand(7, device=DEVICE) + 0.5), (5, w0), (2, w0)):
        t = torch.tensor(target, device=DEVICE)
        out, tw = L.nll_loss_forward.__wrapped__(x, t, w, reduction, 5)
        rout, rtw = fwd(x, t, w, reduction, 5)
        torch.testing.assert_close(out, rout, equal_nan=True)
        torch.testing.assert_close(tw, rtw)
        g = torch.tensor(0.7, device=DEVICE)
        torch.testing.assert_close(L.nll_loss_backward.__wrapped__(g, x, t, w, reduction, 5, rtw),
                                   bwd(g, x, t, w, reduction, 5, rtw), equal_nan=True)
    xt = torch.randn(9, 20, device=DEVICE).t()  # [20, 9], column-major
    tt = torch.randint(0, 9, (40,), device=DEVICE)[::2]
    out, tw = L.nll_loss_forward.__wrapped__(xt, tt, None, reduction, -100)
    rout, rtw = fwd(xt, tt, None, reduction, -100)
    assert_close(out, rout)
    assert_close(tw, rtw)


def test_nll_loss_empty_and_all_ignored():
    x = torch.zeros(0, 4, device=DEVICE)
    t = torch.zeros(0, dtype=torch.int64, device=DEVICE)
    for r in (0, 1, 2):
        out, tw = L.nll_loss_forward.__wrapped__(x, t, None, r, -100)
        rout, rtw = fwd(x, t, None, r, -100)
        assert out.shape == rout.shape
        torch.testing.assert_close(out, rout, equal_nan=True)
    x = torch.randn(3, 4, device=DEVICE)
    t = torch.full((3,), -100, device=DEVICE)
    out, tw = L.nll_loss_forward.__wrapped__(x, t, None, 1, -100)
    assert out.isnan() and tw.item() == 0


@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_nll_loss_target_out_of_range_is_nan_not_a_wrong_number(reduction):
    # torch raises (a device-side assert on CUDA); gems must neither read outside the row
    # nor quietly treat the sample as ignored
    x = torch.randn(4, 6, device=DEVICE).log_softmax(1)
    t = torch.tensor([1, 6, -100, -3], device=DEVICE)
    out, tw = L.nll_loss_forward.__wrapped__(x, t, None, reduction, -100)
    if reduction == 0:
        assert torch.isfinite(out[0]) and out[1].isnan() and out[2] == 0 and out[3].isnan()
    else:
        assert out.isnan()
    g = torch.ones(4 if reduction == 0 else (), device=DEVICE)
    gin = L.nll_loss_backward.__wrapped__(g, x, t, None, reduction, -100, tw)
    assert gin[1].isnan().all() and gin[3].isnan().all()
    assert torch.isfinite(gin[0]).all() and (gin[2] == 0).all()


def test_nll_loss_routed_to_native():
    x = torch.randn(3, 4, device=DEVICE)
    with gemsops.use_gems(include=["nll_loss"]):
        with pytest.raises(RuntimeError):
            F.nll_loss(x, torch.tensor([0, 1, 2], dtype=torch.int32, device=DEVICE))  # int32 target
        with pytest.raises((RuntimeError, ValueError)):
            F.nll_loss(x, torch.tensor([0, 1], device=DEVICE))  # batch mismatch
        w = torch.rand(5, device=DEVICE)
        with pytest.raises(RuntimeError):
            F.nll_loss(x, torch.tensor([0, 1, 2], device=DEVICE), weight=w)  # wrong weight size


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_through_gems(dtype, tmp_path):
    logits = torch.randn(12, 9, device=DEVICE).to(dtype)
    target = torch.randint(0, 9, (12,), device=DEVICE)
    target[4] = -100
    a = logits.clone().requires_grad_()
    ref_loss = F.cross_entropy(a, target, label_smoothing=0.0)
    ref_loss.backward()
    b = logits.clone().requires_grad_()
    log = tmp_path / "ops.txt"
    # cross_entropy itself left out: F.cross_entropy then decomposes into log_softmax + nll_loss
    gemsops.enable(unused=["cross_entropy"], record=True, path=log)
    try:
        loss = F.cross_entropy(b, target)
        loss.backward()
        none = F.cross_entropy(logits, target, reduction="none", weight=torch.rand(9, device=DEVICE).to(dtype))
    finally:
        gemsops.disable()
    text = log.read_text()
    assert "aten::nll_loss_forward" in text and "aten::nll_loss_backward" in text
    assert_close(loss, ref_loss, dtype)
    assert_close(b.grad, a.grad, dtype)
    assert none.shape == (12,) and none[4].item() == 0


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.big_memory
def test_nll_loss_large():
    x, t = _inputs(8192, 32000, torch.bfloat16)
    for r in (0, 1, 2):
        out, tw = L.nll_loss_forward.__wrapped__(x, t, None, r, -100)
        rout, rtw = fwd(x.double(), t, None, r, -100)
        assert_close(out, rout.to(out.dtype), out.dtype, scale=2)
    g = torch.tensor(1.0, device=DEVICE, dtype=torch.bfloat16)
    gin = L.nll_loss_backward.__wrapped__(g, x, t, None, 1, -100, tw)
    assert_close(gin, bwd(g, x, t, None, 1, -100, tw))

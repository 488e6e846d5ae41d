"""layer_norm: aten native_layer_norm / native_layer_norm_backward against torch in float64."""
import importlib
import re

import pytest
import torch

import gemsops
from gemsops.ops.layer_norm import native_layer_norm, native_layer_norm_backward
from gemsops.runtime.oplog import read_log
from tests.util import FLOAT_DTYPES, ON_GPU, assert_close, check_composite_under_forward_ad_and_fake, randn, reference

CASES = [((5, 7), [7]), ((3, 300), [300]), ((2, 3, 33), [33]), ((4, 6, 5), [6, 5])]
if ON_GPU:
    CASES += [((4096, 4096), [4096]), ((64, 32768), [32768]), ((7, 1000), [1000])]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,ns", CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_forward_backward_kernels(shape, ns, dtype, affine):
    x = randn(*shape, dtype=dtype) * 2 + 0.5
    w = randn(*ns, dtype=dtype) if affine else None
    b = randn(*ns, dtype=dtype) if affine else None
    y, mean, rstd = native_layer_norm(x, ns, w, b, 1e-5)
    y_nat, mean_nat, rstd_nat = torch.ops.aten.native_layer_norm(x, ns, w, b, 1e-5)
    y_ref, mean_ref, rstd_ref = reference(torch.ops.aten.native_layer_norm, x, ns, w, b, 1e-5)
    for got, nat in ((y, y_nat), (mean, mean_nat), (rstd, rstd_nat)):
        assert got.dtype == nat.dtype and got.shape == nat.shape
    assert_close(y, y_ref.to(dtype), dtype, scale=2)
    assert_close(mean, mean_ref.to(mean.dtype), mean.dtype, scale=2)
    assert_close(rstd, rstd_ref.to(rstd.dtype), rstd.dtype, scale=10)
    g = randn(*shape, dtype=dtype)
    mask = [True, affine, affine]
    dx, dw, db = native_layer_norm_backward(g, x, ns, mean, rstd, w, b, mask)
    rdx, rdw, rdb = reference(torch.ops.aten.native_layer_norm_backward, g, x, ns, mean_ref, rstd_ref, w, b, mask)
    assert_close(dx, rdx.to(dtype), dtype, scale=4)
    if affine:
        assert dw.dtype == dtype and db.dtype == dtype
        assert_close(dw, rdw.to(dtype), dtype, scale=4)
        assert_close(db, rdb.to(dtype), dtype, scale=4)
    else:
        assert dw is None and db is None


def test_masks_layouts_and_fallbacks():
    x = randn(8, 50)[:, 5:45]
    w, b, g = randn(40), randn(40), randn(8, 40)
    y, mean, rstd = native_layer_norm(x, [40], w, b, 1e-6)
    assert_close(y, reference(torch.ops.aten.native_layer_norm, x, [40], w, b, 1e-6)[0].float())
    nat = torch.ops.aten.native_layer_norm_backward(g, x, [40], mean, rstd, w, b, [False, True, False])
    got = native_layer_norm_backward(g, x, [40], mean, rstd, w, b, [False, True, False])
    assert got[0] is None and got[2] is None
    assert_close(got[1], nat[1], scale=4)
    got = native_layer_norm_backward(g, x, [40], mean, rstd, w, None, [True, False, True])
    assert got[2] is None  # no bias: no bias gradient
    assert_close(got[0], torch.ops.aten.native_layer_norm_backward(g, x, [40], mean, rstd, w, None,
                                                                   [True, False, False])[0], scale=4)
    # fp32 params on a bf16 input: torch's CPU kernel computes them (its mixed-type rule), its CUDA
    # kernel raises "expected scalar type BFloat16 but found Float"; gems must do the same
    h = randn(3, 16, dtype=torch.bfloat16)
    wf, bf = randn(16), randn(16)
    try:
        nat = torch.ops.aten.native_layer_norm(h, [16], wf, bf, 1e-5)
    except RuntimeError as err:
        with pytest.raises(RuntimeError, match=re.escape(str(err).splitlines()[0])):
            native_layer_norm(h, [16], wf, bf, 1e-5)
    else:
        for got, e in zip(native_layer_norm(h, [16], wf, bf, 1e-5), nat):
            assert got.dtype == e.dtype
            assert_close(got, e, got.dtype, scale=2)
    d = randn(3, 8, dtype=torch.float64)  # routed to native
    assert_close(native_layer_norm(d, [8], None, None, 1e-5)[0], torch.ops.aten.native_layer_norm(d, [8], None, None, 1e-5)[0])
    y, mean, rstd = native_layer_norm(randn(0, 8), [8], None, None, 1e-5)
    assert y.shape == (0, 8) and mean.shape == (0, 1)


def test_repeated_signatures_read_their_own_inputs():
    # from its second call on, a forward signature takes a planned launch: each call must
    # read its own input, weight, bias and eps; layouts and affine variants must not share it
    ln = torch.ops.aten.native_layer_norm
    for _ in range(3):
        for x in (randn(8, 50)[:, 5:45], randn(8, 40), randn(4, 2, 40).transpose(0, 1)):
            for w, b, eps in ((randn(40), randn(40), 1e-6), (None, None, 0.5), (randn(40), None, 1e-6),
                              (None, randn(80)[::2], 1e-6)):
                got = native_layer_norm(x, [40], w, b, eps)
                want = reference(ln, x, [40], w, b, eps)
                for g, e in zip(got, want):
                    assert g.shape == e.shape
                    assert_close(g, e.to(g.dtype), scale=2)


def test_repeated_backward_signatures_read_their_own_inputs():
    # from its second call on, a backward signature takes a planned launch: each call must
    # read its own gradient, input, statistics and weight; every mask (the weight and bias
    # sums share one column-sum launch), layout and width (300 loops) gets its own plan
    module = importlib.import_module("gemsops.ops.layer_norm")

    module._BACKWARDS.clear()
    masks = [[True, True, True], [True, False, False], [False, True, False], [False, False, True],
             [True, False, True], [False, True, True]]
    for _ in range(3):
        for x in (randn(8, 50)[:, 5:45], randn(6, 40), randn(4, 2, 40).transpose(0, 1), randn(5, 300)):
            n = x.shape[-1]
            for w, b in ((randn(n), randn(n)), (None, None), (randn(n), None), (None, randn(n))):
                for mask in masks:
                    if (mask[1] and w is None) or (mask[2] and b is None):
                        continue  # autograd never asks for those (torch's CPU kernel then fails)
                    g = randn(*x.shape)
                    _, mean, rstd = native_layer_norm(x, [n], w, b, 1e-5)
                    got = native_layer_norm_backward(g, x, [n], mean, rstd, w, b, mask)
                    want = reference(torch.ops.aten.native_layer_norm_backward, g, x, [n], mean, rstd, w, b, mask)
                    for a, e, t in zip(got, want, (x, w, b)):
                        assert (a is None) == (e is None)
                        if a is not None:
                            assert a.dtype == t.dtype and a.shape == t.shape
                            assert_close(a, e.to(a.dtype), scale=4)
    assert len(module._BACKWARDS) >= 30


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_autograd_through_enable(tmp_path, dtype):
    log = tmp_path / "ops.log"
    x = randn(2, 3, 40, dtype=dtype).requires_grad_()
    w = randn(40, dtype=dtype).requires_grad_()
    b = randn(40, dtype=dtype).requires_grad_()
    g = randn(2, 3, 40, dtype=dtype)
    y = torch.nn.functional.layer_norm(x, [40], w, b)
    grads = torch.autograd.grad(y, (x, w, b), g)
    with gemsops.use_gems(include=["layer_norm"], record=True, path=log):
        y2 = torch.nn.functional.layer_norm(x, [40], w, b)
        grads2 = torch.autograd.grad(y2, (x, w, b), g)
    assert_close(y2, y, dtype, scale=2)
    for a, e in zip(grads2, grads):
        assert_close(a, e, dtype, scale=4)
    ops = [op for _, op, _ in read_log(log)]
    assert "aten::native_layer_norm" in ops and "aten::native_layer_norm_backward" in ops


def test_public_layer_norm_is_differentiable():
    x = randn(4, 2, 24).requires_grad_()
    w, b = randn(24).requires_grad_(), randn(24).requires_grad_()
    g = randn(4, 2, 24)
    grads = torch.autograd.grad(gemsops.ops.layer_norm(x, 24, w, b), (x, w, b), g)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    refs = torch.autograd.grad(torch.nn.functional.layer_norm(xd, [24], wd, bd), (xd, wd, bd), g.double())
    for a, e in zip(grads, refs):
        assert_close(a, e.float(), scale=4)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "no_grad_needed"])
def test_layer_norm_without_autograd_is_one_gems_call(mode):
    # F.layer_norm where nothing records a gradient: gems takes aten::layer_norm itself
    # (no native_layer_norm dispatch, no mean/rstd); each call reads its own arguments
    from tests.gems_probe import GemsProbe

    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
           "no_grad_needed": torch.enable_grad}[mode]
    cases = [(randn(3, 5, 40), randn(40), randn(40), 1e-5),
             (randn(6, 40)[::2], None, randn(40), 0.25),
             (randn(2, 40, dtype=torch.bfloat16), randn(40, dtype=torch.bfloat16), None, 1e-6)]
    wants = [reference(torch.ops.aten.layer_norm, x, [40], w, b, eps) for x, w, b, eps in cases]
    with GemsProbe() as probe, gemsops.use_gems(include=["layer_norm"]), ctx():
        for _ in range(2):  # the second call takes the planned launch
            for (x, w, b, eps), want in zip(cases, wants):
                got = torch.nn.functional.layer_norm(x, [40], w, b, eps)
                assert got.dtype == x.dtype and got.shape == x.shape
                assert_close(got, want.to(got.dtype), got.dtype, scale=2)
    assert probe.served["layer_norm"] == 6 and probe.routed["layer_norm"] == 0, probe.served
    assert probe.served["native_layer_norm"] == 0


def test_layer_norm_under_tracing_and_forward_ad_takes_torchs_composite():
    check_composite_under_forward_ad_and_fake(
        ["layer_norm"], lambda x, w, b: torch.nn.functional.layer_norm(x, [24], w, b), randn(4, 24), randn(24),
        randn(24))

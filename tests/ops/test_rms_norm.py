"""rms_norm: aten _fused_rms_norm / _fused_rms_norm_backward and gemsops.ops.rms_norm."""
import importlib
import warnings

import pytest
import torch
from torch._decomp.decompositions import _fused_rms_norm_backward as decomposed_backward

import gemsops
from gemsops.ops.rms_norm import _fused_rms_norm, _fused_rms_norm_backward
from gemsops.runtime.oplog import read_log
from tests.util import (DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, check_composite_under_forward_ad_and_fake, randn,
                        reference)

# (shape, normalized_shape): odd widths, a row wider than the interpreter's one-pass limit
# (looped kernel), two normalized dims, broadcast leading dims
CASES = [((5, 7), [7]), ((3, 300), [300]), ((2, 3, 33), [33]), ((4, 6, 5), [6, 5]), ((1, 1, 64), [64])]
if ON_GPU:
    CASES += [((32, 4096), [4096]), ((257, 8192), [8192]), ((4, 65536), [65536]), ((3, 5120), [5120])]


def _ref_forward(x, ns, w, eps):
    return reference(torch.ops.aten._fused_rms_norm, x, ns, w, eps)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,ns", CASES)
@pytest.mark.parametrize("has_weight", [True, False])
def test_forward_backward_kernels(shape, ns, dtype, has_weight):
    x = randn(*shape, dtype=dtype)
    w = randn(*ns, dtype=dtype) if has_weight else None
    y, rstd = _fused_rms_norm(x, ns, w, 1e-5)
    y_ref, rstd_ref = _ref_forward(x, ns, w, 1e-5)
    native_y, native_rstd = torch.ops.aten._fused_rms_norm(x, ns, w, 1e-5)
    assert y.dtype == native_y.dtype and y.shape == native_y.shape
    assert rstd.dtype == native_rstd.dtype and rstd.shape == native_rstd.shape
    assert_close(y, y_ref.to(dtype), dtype)
    assert_close(rstd, rstd_ref.float(), torch.float32, scale=10)
    g = randn(*shape, dtype=dtype)
    dx, dw = _fused_rms_norm_backward(g, x, ns, rstd, w, [True, True])
    with torch.no_grad():
        dx_ref, dw_ref = decomposed_backward(g.double(), x.double(), ns, rstd_ref, None if w is None else w.double(),
                                             [True, True])
    assert_close(dx, dx_ref.to(dtype), dtype, scale=4)
    if has_weight:
        assert dw.dtype == dtype and dw.shape == w.shape
        assert_close(dw, dw_ref.to(dtype), dtype, scale=4)
    else:
        assert dw is None


def test_output_mask_and_eps_none():
    x, w, g = randn(6, 300), randn(300), randn(6, 300)
    y, rstd = _fused_rms_norm(x, [300], w, None)
    y_nat, rstd_nat = torch.ops.aten._fused_rms_norm(x, [300], w, None)
    assert_close(y, y_nat)
    assert_close(rstd, rstd_nat)
    tiny = torch.full((2, 8), 1e-3, dtype=torch.bfloat16, device=DEVICE)  # eps dominates
    assert_close(_fused_rms_norm(tiny, [8], None, None)[1], torch.ops.aten._fused_rms_norm(tiny, [8], None, None)[1])
    dx, dw = _fused_rms_norm_backward(g, x, [300], rstd, w, [False, True])
    assert dx is None and dw is not None
    dx2, dw2 = _fused_rms_norm_backward(g, x, [300], rstd, w, [True, False])
    assert dw2 is None
    assert_close(dw, decomposed_backward(g, x, [300], rstd, w, [False, True])[1], scale=4)
    assert_close(dx2, decomposed_backward(g, x, [300], rstd, w, [True, False])[0], scale=4)


def test_layouts_and_mixed_weight_dtype():
    base = randn(8, 50)
    for x in (base[:, 5:45], base[::2, :40], base.t().contiguous().t()[:, :40], randn(4, 2, 40).transpose(0, 1)):
        w = randn(40)
        assert_close(_fused_rms_norm(x, [40], w, 1e-6)[0], _ref_forward(x, [40], w, 1e-6)[0].float())
    x = randn(3, 16, dtype=torch.bfloat16)
    w = randn(16)  # fp32 weight on bf16 input: output stays bf16 as in torch
    y, _ = _fused_rms_norm(x, [16], w, 1e-6)
    assert y.dtype == torch.bfloat16
    assert_close(y, _ref_forward(x, [16], w, 1e-6)[0].bfloat16())


def test_repeated_signatures_read_their_own_inputs():
    # from its second call on, a forward signature takes a planned launch: each call must
    # read its own input, weight and eps; layouts, weight dtypes and shapes must not share it
    for _ in range(3):
        for x in (randn(8, 50)[:, 5:45], randn(8, 40), randn(2, 4, 40), randn(4, 2, 40).transpose(0, 1)):
            for w, eps in ((randn(40), 1e-6), (None, 0.5), (randn(40, dtype=torch.bfloat16), 1e-6),
                           (randn(80)[::2], 1e-6)):
                assert_close(_fused_rms_norm(x, [40], w, eps)[0], _ref_forward(x, [40], w, eps)[0].float())
        x = randn(5, 8)
        assert_close(_fused_rms_norm(x, [5, 8], None, 1e-6)[0], _ref_forward(x, [5, 8], None, 1e-6)[0].float())


def test_repeated_backward_signatures_read_their_own_inputs():
    # from its second call on, a backward signature takes a planned launch (outputs and the
    # partial rows allocated from stand-ins): each call must read its own gradient, input,
    # rstd and weight, and masks, layouts and widths (300 takes the looped kernel, whose
    # partial rows start zeroed) must not share a plan
    module = importlib.import_module("gemsops.ops.rms_norm")

    module._BACKWARDS.clear()
    for _ in range(3):
        for x in (randn(8, 50)[:, 5:45], randn(6, 40), randn(4, 2, 40).transpose(0, 1), randn(5, 300)):
            n = x.shape[-1]
            for w in (randn(n), None, randn(n, dtype=torch.bfloat16)):
                for mask in ([True, True], [True, False], [False, True]):
                    g = randn(*x.shape)
                    _, rstd = _fused_rms_norm(x, [n], w, 1e-6)
                    dx, dw = _fused_rms_norm_backward(g, x, [n], rstd, w, mask)
                    with torch.no_grad():
                        want = decomposed_backward(g.double(), x.double(), [n], rstd.double(),
                                                   None if w is None else w.double(), mask)
                    assert (dx is None) != mask[0]
                    assert (dw is None) != (mask[1] and w is not None)
                    if dx is not None:
                        assert_close(dx, want[0].float(), scale=4)
                    if dw is not None:
                        assert dw.dtype == x.dtype and dw.shape == w.shape
                        assert_close(dw, want[1].float(), scale=4)
    assert len(module._BACKWARDS) >= 20  # the contiguous and view-free layouts were planned


def test_empty_and_routed_to_native():
    y, rstd = _fused_rms_norm(randn(0, 16), [16], None, None)
    assert y.shape == (0, 16) and rstd.shape == (0, 1)
    x = randn(3, 8, dtype=torch.float64)
    assert_close(_fused_rms_norm(x, [8], None, 1e-6)[0], torch.ops.aten._fused_rms_norm(x, [8], None, 1e-6)[0])
    bad = randn(3, 8)  # normalized_shape not matching the input: whatever torch does
    try:
        expected = torch.ops.aten._fused_rms_norm(bad, [7], None, None)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            _fused_rms_norm(bad, [7], None, None)
    else:
        assert_close(_fused_rms_norm(bad, [7], None, None), expected)
    g = randn(3, 8, dtype=torch.float64)
    dx, _ = _fused_rms_norm_backward(g, x, [8], torch.ones(3, 1, dtype=torch.float64, device=DEVICE), None, [True, False])
    assert_close(dx, decomposed_backward(g, x, [8], torch.ones(3, 1, dtype=torch.float64, device=DEVICE), None,
                                         [True, False])[0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_autograd_through_enable(tmp_path, dtype):
    log = tmp_path / "ops.log"
    x = randn(2, 3, 40, dtype=dtype).requires_grad_()
    w = randn(40, dtype=dtype).requires_grad_()
    g = randn(2, 3, 40, dtype=dtype)
    y = torch.nn.functional.rms_norm(x, [40], w, 1e-6)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    gemsops.enable(record=True, path=log)
    y2 = torch.nn.functional.rms_norm(x, [40], w, 1e-6)
    gx2, gw2 = torch.autograd.grad(y2, (x, w), g)
    gemsops.disable()
    assert_close(y2, y, dtype)
    assert_close(gx2, gx, dtype, scale=4)
    assert_close(gw2, gw, dtype, scale=4)
    ops = [op for _, op, _ in read_log(log)]
    assert "aten::_fused_rms_norm" in ops and "aten::_fused_rms_norm_backward" in ops


def test_public_rms_norm_autograd():
    x = randn(4, 3, 24).requires_grad_()
    w = randn(24).requires_grad_()
    g = randn(4, 3, 24)
    y = gemsops.ops.rms_norm(x, [24], w)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    x2, w2 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    y_ref = torch.nn.functional.rms_norm(x2, [24], w2)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x2, w2), g.double())
    assert_close(y, y_ref.float())
    assert_close(gx, gx_ref.float(), scale=4)
    assert_close(gw, gw_ref.float(), scale=4)
    y = gemsops.ops.rms_norm(x, 24)  # int normalized_shape, no weight
    assert_close(y, torch.nn.functional.rms_norm(x.detach(), [24]))
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(torch.nn.functional.rms_norm(x2, [24]), x2, g.double())
    assert_close(gx, gx_ref.float(), scale=4)


def test_broadcast_input_and_expanded_grad():
    x = randn(1, 24).expand(5, 24)  # stride-0 rows
    w = randn(24)
    y, rstd = _fused_rms_norm(x, [24], w, 1e-6)
    assert_close(y, _ref_forward(x, [24], w, 1e-6)[0].float())
    g = torch.ones(1, 1, device=DEVICE).expand(5, 24)  # what y.sum().backward() sends
    dx, dw = _fused_rms_norm_backward(g, x, [24], rstd, w, [True, True])
    rdx, rdw = decomposed_backward(g.double(), x.double(), [24], rstd.double(), w.double(), [True, True])
    assert_close(dx, rdx.float(), scale=4)
    assert_close(dw, rdw.float(), scale=4)


def test_public_rms_norm_inference_path():
    x, w = randn(3, 40, dtype=torch.bfloat16), randn(40, dtype=torch.bfloat16)
    with torch.no_grad():
        y = gemsops.ops.rms_norm(x, (40,), w, 1e-6)
    assert y.grad_fn is None
    assert_close(y, _ref_forward(x, [40], w, 1e-6)[0].bfloat16())


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "no_grad_needed"])
def test_rms_norm_without_autograd_is_one_gems_call(mode):
    # F.rms_norm where nothing records a gradient: gems takes aten::rms_norm itself (no
    # _fused_rms_norm dispatch, no rstd); each call reads its own arguments
    from tests.gems_probe import GemsProbe

    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
           "no_grad_needed": torch.enable_grad}[mode]
    cases = [(randn(3, 5, 40), randn(40), 1e-5),
             (randn(6, 40)[::2], None, None),  # strided rows, fp32 machine epsilon
             (randn(2, 40, dtype=torch.bfloat16), randn(40, dtype=torch.bfloat16), 1e-6),
             (randn(4, 2, 20, dtype=torch.float16), randn(2, 20, dtype=torch.float16), 0.25)]
    wants = [_ref_forward(x, list(w.shape) if w is not None else [40], w, eps)[0] for x, w, eps in cases]
    with GemsProbe() as probe, gemsops.use_gems(include=["rms_norm"]), ctx():
        for _ in range(2):  # the second call takes the planned launch
            for (x, w, eps), want in zip(cases, wants):
                ns = list(w.shape) if w is not None else [40]
                got = torch.nn.functional.rms_norm(x, ns, w, eps)
                assert got.dtype == x.dtype and got.shape == x.shape
                assert_close(got, want.to(got.dtype), got.dtype, scale=2)
    assert probe.served["rms_norm"] == 8 and probe.routed["rms_norm"] == 0, probe.served
    assert probe.served["_fused_rms_norm"] == 0


def test_rms_norm_whole_call_leaves_torchs_cases_to_the_composite():
    # a gradient to record, a weight of another dtype, a shape error: torch's composite
    # decides (its _fused_rms_norm is gems' kernel where it runs one)
    from tests.gems_probe import GemsProbe

    x, w = randn(3, 40), randn(40)
    with GemsProbe() as probe, gemsops.use_gems(include=["rms_norm"]):
        wg = w.clone().requires_grad_()
        y = torch.nn.functional.rms_norm(x, [40], wg, 1e-6)
        assert y.grad_fn is not None
        (gw,) = torch.autograd.grad(y, wg, torch.ones_like(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "cannot dispatch to fused implementation", as natively
            mixed = torch.nn.functional.rms_norm(x, [40], w.double(), 1e-6)
        with pytest.raises(RuntimeError):
            torch.nn.functional.rms_norm(x, [41], w, 1e-6)
    assert probe.routed["rms_norm"] == 2 and probe.errors["rms_norm"] == 1, (probe.routed, probe.errors)
    assert probe.served["rms_norm"] == 0
    assert probe.served["_fused_rms_norm"] >= 1 and probe.served["_fused_rms_norm_backward"] == 1
    xd, wd = x.double(), w.double().requires_grad_()
    (gw_ref,) = torch.autograd.grad(torch.nn.functional.rms_norm(xd, [40], wd, 1e-6), wd, torch.ones_like(xd))
    assert_close(gw, gw_ref.float(), scale=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mixed.dtype == torch.nn.functional.rms_norm(x, [40], w.double(), 1e-6).dtype
    assert_close(mixed, torch.nn.functional.rms_norm(xd, [40], w.double(), 1e-6).to(mixed.dtype))


def test_rms_norm_under_tracing_and_forward_ad_takes_torchs_composite():
    check_composite_under_forward_ad_and_fake(["rms_norm"], lambda x, w: torch.nn.functional.rms_norm(x, [24], w),
                                              randn(4, 24), randn(24))

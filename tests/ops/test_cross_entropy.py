"""F.cross_entropy through gems' one-pass kernel (ops/cross_entropy.py): loss and gradient against
torch in float64, the options models use, and every input that must take torch's composite."""
import pytest
import torch
import torch.nn.functional as F

import gemsops
from tests.gems_probe import GemsProbe
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, SeenOps, assert_close

OVERLOAD = "cross_entropy_loss"


def _logits(n, c, dtype, scale=3.0):
    return (torch.randn(n, c, device=DEVICE) * scale).to(dtype)


def _targets(n, c, ignored=(1,), ignore_index=-100):
    t = torch.randint(0, c, (n,), device=DEVICE)
    for i in ignored:
        if i < n:
            t[i] = ignore_index
    return t


def _ref(x, t, g, **kw):
    """Native loss and input gradient in float64 (cotangent ``g``)."""
    xr = x.detach().double().requires_grad_()
    kw = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    loss = F.cross_entropy(xr, t, **kw)
    loss.backward(g.double())
    return loss.detach(), xr.grad


def _gems(x, t, g, **kw):
    """Loss and input gradient with only cross_entropy routed to gems; asserts gems served it."""
    xg = x.detach().clone().requires_grad_()
    with GemsProbe() as probe, gemsops.use_gems(include=["cross_entropy"]):
        loss = F.cross_entropy(xg, t, **kw)
        loss.backward(g)
    assert probe.served[OVERLOAD] == 1 and probe.routed[OVERLOAD] == 0, (probe.served, probe.routed)
    return loss.detach(), xg.grad


OPTIONS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weight=True),
    dict(weight=True, reduction="none"),
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.25, weight=True),
    dict(label_smoothing=0.25, weight=True, reduction="none"),
    dict(ignore_index=3),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "mean")
def test_loss_and_gradient_match_torch(options, dtype):
    n, c = 37, 300  # several column blocks per row on the interpreter (its BLOCK is 64)
    kw = dict(options)
    x = _logits(n, c, dtype)
    t = _targets(n, c, ignored=(1, 5), ignore_index=kw.get("ignore_index", -100))
    if kw.get("weight"):
        kw["weight"] = (torch.rand(c, device=DEVICE) + 0.1).to(dtype)
    shape = (n,) if kw.get("reduction") == "none" else ()
    g = torch.randn(shape, device=DEVICE).to(dtype)
    loss, grad = _gems(x, t, g, **kw)
    ref_loss, ref_grad = _ref(x, t, g, **kw)
    assert loss.dtype == dtype and loss.shape == ref_loss.shape
    # bf16 logits of magnitude ~10: the loss is exact to fp32, the reference to float64
    assert_close(loss, ref_loss.to(dtype), dtype, scale=2)
    assert_close(grad, ref_grad.to(dtype), dtype, scale=2)
    if kw.get("reduction") == "none":
        assert loss[1].item() == 0 and grad[1].abs().sum().item() == 0  # ignored rows


def test_strided_rows_and_targets():
    wide = _logits(20, 160, torch.float32)
    x = wide[:, 10:110]  # row stride 160, unit column stride
    t = torch.randint(0, 100, (40,), device=DEVICE)[::2]
    g = torch.tensor(1.5, device=DEVICE)
    loss, grad = _gems(x, t, g, label_smoothing=0.05)
    ref_loss, ref_grad = _ref(x, t, g, label_smoothing=0.05)
    assert_close(loss, ref_loss.float())
    assert_close(grad, ref_grad.float())
    assert grad.is_contiguous()


def test_expanded_cotangent_of_unreduced_loss():
    x, t = _logits(6, 50, torch.float32), _targets(6, 50)
    g = torch.tensor(0.5, device=DEVICE).expand(6)  # what loss.sum().backward() hands back
    loss, grad = _gems(x, t, g, reduction="none")
    ref_loss, ref_grad = _ref(x, t, g, reduction="none")
    assert_close(grad, ref_grad.float())


def test_non_finite_logits_follow_torch():
    x = _logits(6, 70, torch.float32)
    x[0, :20] = float("-inf")  # masked vocabulary entries: the loss stays finite
    x[2, 7] = float("nan")
    x[3, 9] = float("inf")
    t = torch.tensor([30, 1, 2, 3, 4, 5], device=DEVICE)
    g = torch.ones(6, device=DEVICE)
    loss, grad = _gems(x, t, g, reduction="none")
    ref_loss, ref_grad = _ref(x, t, g, reduction="none")
    torch.testing.assert_close(loss, ref_loss.float(), equal_nan=True)
    torch.testing.assert_close(grad, ref_grad.float(), equal_nan=True)
    assert torch.isfinite(loss[0]) and loss[2].isnan() and loss[3].isnan()


def test_every_target_ignored_gives_nan_mean_and_zero_gradient():
    x = _logits(4, 30, torch.float32)
    t = torch.full((4,), -100, device=DEVICE)
    g = torch.tensor(1.0, device=DEVICE)
    loss, grad = _gems(x, t, g)
    ref_loss, _ = _ref(x, t, g)
    assert loss.isnan() and ref_loss.isnan()
    sum_loss, sum_grad = _gems(x, t, g, reduction="sum")
    assert sum_loss.item() == 0 and sum_grad.abs().sum().item() == 0


def test_target_out_of_range_is_nan_not_a_wrong_number():
    # torch raises (a device-side assert on CUDA); gems must not read past the row
    x = _logits(3, 10, torch.float32)
    t = torch.tensor([1, 10, -5], device=DEVICE)
    with gemsops.use_gems(include=["cross_entropy"]):
        loss = F.cross_entropy(x, t, reduction="none")
    assert torch.isfinite(loss[0]) and loss[1].isnan() and loss[2].isnan()


def test_inference_mode_no_grad_and_explicit_call():
    x, t = _logits(9, 40, torch.float32), _targets(9, 40)
    ref = F.cross_entropy(x.double(), t).float()
    with GemsProbe() as probe, gemsops.use_gems(include=["cross_entropy"]):
        with torch.inference_mode():
            a = F.cross_entropy(x.clone(), t.clone())  # inference tensors skip autograd's key
        with torch.no_grad():
            b = F.cross_entropy(x.requires_grad_(), t)
    assert probe.served[OVERLOAD] == 2
    assert b.grad_fn is None
    c = gemsops.ops.cross_entropy(x.detach(), t)  # no enabling needed
    for v in (a, b, c):
        assert_close(v, ref)


def test_double_backward_matches_torch():
    x, t = _logits(5, 24, torch.float32), _targets(5, 24)
    w = torch.rand(24, device=DEVICE) + 0.5

    def second_order(enabled):
        xr = x.clone().requires_grad_()
        ctx = gemsops.use_gems(include=["cross_entropy"]) if enabled else gemsops.use_gems(include=[])
        with ctx:
            loss = F.cross_entropy(xr, t, weight=w, label_smoothing=0.1)
            (g,) = torch.autograd.grad(loss, xr, create_graph=True)
            (gg,) = torch.autograd.grad((g * g).sum(), xr)
        return g, gg

    g, gg = second_order(True)
    rg, rgg = second_order(False)
    assert_close(g, rg)
    assert_close(gg, rgg)


def _routed(fn):
    with GemsProbe() as probe, gemsops.use_gems(include=["cross_entropy"]):
        out = fn()
    assert probe.served[OVERLOAD] == 0 and probe.routed[OVERLOAD] >= 1, (probe.served, probe.routed)
    return out


@pytest.mark.parametrize("case", ["probabilities", "spatial", "one_sample", "float64", "int32_target",
                                  "column_major", "empty_batch"])
def test_inputs_the_kernel_does_not_take_run_torchs_composite(case):
    x, t = _logits(6, 12, torch.float32), _targets(6, 12)
    args = {
        "probabilities": (x, torch.softmax(torch.randn(6, 12, device=DEVICE), 1)),
        "spatial": (torch.randn(2, 12, 3, device=DEVICE), torch.randint(0, 12, (2, 3), device=DEVICE)),
        "one_sample": (x[0], t[0]),
        "float64": (x.double(), t),
        "int32_target": (x, t.int()),
        "column_major": (x.t().contiguous().t(), t),
        "empty_batch": (x[:0], t[:0]),
    }[case]
    if case == "int32_target":
        with pytest.raises(RuntimeError):  # torch's own error, unchanged
            _routed(lambda: F.cross_entropy(*args))
        return
    got = _routed(lambda: F.cross_entropy(*args))
    torch.testing.assert_close(got, F.cross_entropy(*args), equal_nan=True)


def test_bad_arguments_keep_torchs_errors():
    x, t = _logits(4, 8, torch.float32), _targets(4, 8)
    with gemsops.use_gems(include=["cross_entropy"]):
        with pytest.raises(RuntimeError, match="label_smoothing"):
            F.cross_entropy(x, t, label_smoothing=1.5)
        with pytest.raises((RuntimeError, ValueError)):
            F.cross_entropy(x, t[:3])
        with pytest.raises(RuntimeError):
            F.cross_entropy(x, t, weight=torch.rand(5, device=DEVICE))


def test_tracing_modes_see_torchs_decomposition():
    # fake tensors (torch.compile's tracing) and dispatch modes reach the autograd-level
    # kernel first; they must get torch's composite, whose ops they can see
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, t = _logits(4, 8, torch.float32), _targets(4, 8)

    with gemsops.use_gems(include=["cross_entropy"]):
        with SeenOps() as seen:
            loss = F.cross_entropy(x, t)
        with FakeTensorMode() as mode:
            fake = F.cross_entropy(mode.from_tensor(x), mode.from_tensor(t))
    assert any("log_softmax" in op for op in seen.ops)
    assert_close(loss, F.cross_entropy(x, t))
    assert fake.shape == () and fake.dtype == torch.float32


def test_weight_requiring_grad_keeps_torchs_behaviour():
    x, t = _logits(4, 8, torch.float32), _targets(4, 8)
    w = torch.rand(8, device=DEVICE, requires_grad=True)
    with gemsops.use_gems(include=["cross_entropy"]):
        with torch.no_grad():  # no gradient asked: the kernel takes it
            assert_close(F.cross_entropy(x, t, weight=w), F.cross_entropy(x, t, weight=w.detach()))
        with pytest.raises(RuntimeError, match="not differentiable"):  # torch's own error
            F.cross_entropy(x, t, weight=w)


def test_repeated_call_signature_is_checked_and_computed_afresh():
    # the second call of a signature reuses the first one's launch plan: new data, another
    # cotangent layout, and what a plan cannot know (a dispatch mode now watching, a
    # weight that now needs a gradient) must still be honoured
    n, c = 6, 40
    w = torch.rand(c, device=DEVICE)
    for _ in range(3):
        x, t, g = _logits(n, c, torch.float32), _targets(n, c), torch.randn(n, device=DEVICE)
        for kw, cotangent in [(dict(weight=w), torch.tensor(0.7, device=DEVICE)), (dict(reduction="none"), g),
                              (dict(reduction="none"), g[:1].expand(n))]:
            loss, grad = _gems(x, t, cotangent, **kw)
            ref_loss, ref_grad = _ref(x, t, cotangent, **kw)
            assert_close(loss, ref_loss.float())
            assert_close(grad, ref_grad.float())
    with gemsops.use_gems(include=["cross_entropy"]):
        with SeenOps() as seen:
            loss = F.cross_entropy(x, t, weight=w)
        assert any("log_softmax" in op for op in seen.ops)
        with pytest.raises(RuntimeError, match="not differentiable"):
            F.cross_entropy(x.requires_grad_(), t, weight=w.clone().requires_grad_())


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.big_memory
def test_more_than_2_31_elements():
    n, c = 16400, 131072  # 2.15e9 logits, past int32 offsets
    x = torch.randn(n, c, device=DEVICE, dtype=torch.bfloat16)
    t = torch.randint(0, c, (n,), device=DEVICE)
    ref = torch.stack([F.cross_entropy(x[i:i + 4096].float(), t[i:i + 4096], reduction="sum")
                       for i in range(0, n, 4096)]).sum() / n
    xg = x.requires_grad_()
    with gemsops.use_gems(include=["cross_entropy"]):
        loss = F.cross_entropy(xg, t)
        loss.backward()
    assert_close(loss.float(), ref, torch.bfloat16)
    last = slice(n - 3, n)
    xr = x[last].detach().float().requires_grad_()
    (F.cross_entropy(xr, t[last], reduction="sum") / n).backward()
    assert_close(xg.grad[last].float(), xr.grad, torch.bfloat16, scale=2)


def test_forward_mode_ad_keeps_its_tangent():
    # dual tensors of forward-mode AD reach the autograd-level kernel; the tangent
    # propagates only through torch's composite
    import torch.autograd.forward_ad as fwAD

    x, t = _logits(4, 8, torch.float32), _targets(4, 8)
    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        want = fwAD.unpack_dual(F.cross_entropy(fwAD.make_dual(x, tangent), t)).tangent
    with gemsops.use_gems(include=["cross_entropy"]), fwAD.dual_level():
        got = fwAD.unpack_dual(F.cross_entropy(fwAD.make_dual(x, tangent), t)).tangent
    assert got is not None
    assert_close(got, want)

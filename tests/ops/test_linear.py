"""linear: aten::linear served whole where no gradient is recorded; torch's composite otherwise."""
import importlib

import pytest
import torch
import torch.nn.functional as F

import gemsops
from tests.gems_probe import GemsProbe
from tests.ops._matmul_util import check
from tests.util import DEVICE, FLOAT_DTYPES, assert_close, check_composite_under_forward_ad_and_fake, randn


def _cases(dtype):
    """(input, weight, bias): the layouts nn.Linear sees, plus strided and broadcast rows."""
    w, b = randn(20, 24, dtype=dtype), randn(20, dtype=dtype)
    return [
        (randn(7, 24, dtype=dtype), w, b),  # 2-D with bias (torch: addmm)
        (randn(2, 5, 24, dtype=dtype), w, None),  # 3-D without bias (torch: matmul -> mm)
        (randn(1, 1, 24, dtype=dtype), w, b),  # a decode step
        (randn(3, 8, 24, dtype=dtype)[:, ::2], w, b),  # leading dims walked by one stride
        (randn(1, 24, dtype=dtype).expand(6, 24), w, None),  # stride-0 rows
        (randn(6, 48, dtype=dtype)[:, ::2], randn(24, 20, dtype=dtype).t(), b),  # strided K, a transposed weight
    ]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "no_grad_needed"])
def test_linear_without_autograd_is_one_gems_call(dtype, mode):
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
           "no_grad_needed": torch.enable_grad}[mode]
    cases = _cases(dtype)
    got = []
    with GemsProbe() as probe, gemsops.use_gems(include=["linear", "mm", "addmm"]), ctx():
        for _ in range(2):  # the second call of each signature takes the kept plan
            got += [F.linear(x, w, b) for x, w, b in cases]
    assert probe.served["linear"] == 2 * len(cases) and probe.routed["linear"] == 0, (probe.served, probe.routed)
    assert probe.served["mm"] == probe.served["addmm"] == 0
    for y, (x, w, b) in zip(got, cases * 2):
        assert y.shape == (*x.shape[:-1], w.shape[0]) and y.is_contiguous()
        check(y, F.linear, x, w, b, k=24)


def test_linear_leaves_torchs_cases_to_the_composite():
    # a gradient to record, a vector input, leading dims no one stride walks, mixed dtypes
    # and shape errors: torch's composite (its mm/addmm are gems' kernels where they run)
    w, b = randn(20, 24), randn(20)
    with GemsProbe() as probe, gemsops.use_gems(include=["linear", "mm", "addmm"]):
        x = randn(2, 5, 24, requires_grad=True)
        y = F.linear(x, w, b)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        vx = randn(24)
        v = F.linear(vx, w, b)
        tx = randn(5, 2, 24).transpose(0, 1)
        t = F.linear(tx, w)
        mixed = randn(3, 24, dtype=torch.float64)
        with pytest.raises(RuntimeError):
            F.linear(mixed, w)
        with pytest.raises(RuntimeError):
            F.linear(randn(3, 23), w)
    assert probe.routed["linear"] == 3 and probe.errors["linear"] == 2, (probe.routed, probe.errors)
    with pytest.raises(RuntimeError):
        F.linear(mixed, w)  # natively the same error
    assert probe.served["linear"] == 0 and probe.served["addmm"] >= 1 and probe.served["mm"] >= 1
    assert_close(gx, torch.ones(2, 5, 20, device=DEVICE) @ w, scale=2)
    check(t, F.linear, tx, w, k=24)
    check(v, F.linear, vx, w, b, k=24)


def test_linear_under_tracing_and_forward_ad_takes_torchs_composite():
    check_composite_under_forward_ad_and_fake(["linear"], F.linear, randn(4, 24), randn(20, 24))



def test_a_kept_plan_runs_only_on_its_device(monkeypatch):
    # a plan holds its device's compiled launches and split-K workspace: on another
    # current device the call is planned afresh instead of reusing it
    from gemsops.ops import _gemm

    linear_module = importlib.import_module("gemsops.ops.linear")  # gemsops.ops.linear is the function

    x, w = randn(3, 24, dtype=torch.bfloat16), randn(20, 24, dtype=torch.bfloat16)
    linear_module.linear(x, w)
    key = (x.shape, x.stride(), x.dtype, w.shape, w.stride(), w.dtype, None)
    assert key in linear_module._CALLS
    assert linear_module._CALLS.launch(key, x, w, None) is not None
    monkeypatch.setattr(_gemm, "current_device", lambda: x.get_device() + 7)
    assert linear_module._CALLS.launch(key, x, w, None) is None

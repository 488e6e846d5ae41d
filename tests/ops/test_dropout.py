import pytest
import torch

import gemsops
from gemsops.ops.dropout import native_dropout, native_dropout_backward
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn

kdrop, kback = native_dropout.__wrapped__, native_dropout_backward.__wrapped__


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout_statistics_and_consistency(dtype, p):
    x = randn(64, 64, dtype=dtype)
    out, mask = kdrop(x, p, True)
    assert out.dtype == dtype and mask.dtype == torch.bool and out.shape == mask.shape == x.shape
    keep = mask.float().mean().item()
    assert abs(keep - (1 - p)) < 0.04
    scale = 1.0 / (1.0 - p)
    expected = (x.double() * mask.double() * scale).to(dtype)
    assert_close(out, expected)
    assert (out[~mask] == 0).all()


def test_dropout_reproducible_with_manual_seed_and_fresh_per_call():
    x = randn(2000)
    torch.manual_seed(123)
    a, ma = kdrop(x, 0.5, True)
    b, mb = kdrop(x, 0.5, True)
    torch.manual_seed(123)
    c, mc = kdrop(x, 0.5, None)
    assert torch.equal(ma, mc) and torch.equal(a, c)
    assert not torch.equal(ma, mb)


def test_dropout_noncontiguous_nan_and_native_routes():
    x = randn(40, 30).t()
    x[0, 0] = float("nan")
    out, mask = kdrop(x, 0.2, True)
    assert_close(out, x * mask * 1.25, equal_nan=True)
    assert out[0, 0].isnan()  # NaN * 0 stays NaN, as torch computes it
    for args in [(x, 0.2, False), (x, 1.0, True), (x.double(), 0.5, True), (torch.empty(0, device=DEVICE), 0.5, True)]:
        got, gm = native_dropout(*args)
        ref, rm = torch.native_dropout(*args)
        if args[1] in (0.0, 1.0) or args[2] is False or args[0].numel() == 0:
            torch.testing.assert_close(got, ref, equal_nan=True)
            torch.testing.assert_close(gm, rm)
        else:
            assert_close(got, args[0] * gm / (1 - args[1]), equal_nan=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dropout_backward(dtype):
    g = randn(5, 7, dtype=dtype)
    mask = torch.rand(5, 7, device=DEVICE) > 0.4
    ref = torch.ops.aten.native_dropout_backward(g.double(), mask, 1 / 0.6).to(dtype)
    assert_close(kback(g, mask, 1 / 0.6), ref)
    assert_close(kback(g.t(), mask.t(), 2.0), torch.ops.aten.native_dropout_backward(g.t(), mask.t(), 2.0))


def test_dropout_autograd_through_enable(tmp_path):
    log = tmp_path / "log"
    x = randn(8, 16).requires_grad_()
    gemsops.only_enable(include=["native_dropout", "native_dropout_backward"], record=True, path=log)
    out, mask = torch.native_dropout(x, 0.25, True)
    out.sum().backward()
    gemsops.disable()
    assert_close(x.grad, mask.float() / 0.75)
    text = log.read_text()
    assert "aten::native_dropout\t" in text and "aten::native_dropout_backward" in text


@pytest.mark.skipif(not ON_GPU, reason="CUDA path: F.dropout reaches native_dropout only on GPU")
def test_dropout_gpu_functional():
    x = randn(4096, 4096, dtype=torch.bfloat16)
    gemsops.only_enable(include=["native_dropout"])
    torch.manual_seed(0)
    y = torch.nn.functional.dropout(x, 0.1, training=True)
    torch.manual_seed(0)
    y2 = torch.nn.functional.dropout(x, 0.1, training=True)
    gemsops.disable()
    assert torch.equal(y, y2)
    assert abs((y == 0).float().mean().item() - 0.1) < 0.01

"""fused_add_rms_norm: vLLM's in-place semantics and the autograd path, against plain torch."""
import importlib

import pytest
import torch

import gemsops
from tests.util import FLOAT_DTYPES, ON_GPU, assert_close, randn

SHAPES = [(5, 7), (3, 300), (2, 3, 33), (1, 64)]
if ON_GPU:
    SHAPES += [(32, 4096), (4096, 8192), (3, 65536), (7, 5120)]


def _reference(x, residual, weight, eps):
    """vLLM's semantics in float64: the sum rounded to the residual dtype, then the norm."""
    s = (x.double() + residual.double()).to(residual.dtype)
    v = s.double()
    y = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.double()
    return y, s


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_in_place_semantics(shape, dtype):
    x, r, w = randn(*shape, dtype=dtype), randn(*shape, dtype=dtype), randn(shape[-1], dtype=dtype)
    y_ref, s_ref = _reference(x, r, w, 1e-6)
    out = gemsops.ops.fused_add_rms_norm(x, r, w, 1e-6)
    assert out[0] is x and out[1] is r
    assert_close(r, s_ref, dtype)
    assert_close(x, y_ref.to(dtype), dtype, scale=2)


@pytest.mark.parametrize("weighted", [True, False])
def test_repeated_calls_use_each_calls_data(weighted):
    # the second call of a signature takes the planned launch: new data, new eps, sliced rows
    for step, eps in enumerate((1e-6, 1e-2, 1e-6)):
        torch.manual_seed(step)
        base = randn(4, 80)
        x, r = base[:, :48], randn(4, 48)
        w = randn(48) if weighted else None
        y_ref, s_ref = _reference(x, r, w, eps)
        gemsops.ops.fused_add_rms_norm(x, r, w, eps)
        assert_close(r, s_ref)
        assert_close(base[:, :48], y_ref.float())


def test_views_no_weight_and_fallback():
    base_x, base_r = randn(6, 50), randn(50, 6)
    x, r = base_x[:, 3:43], base_r.t()[:, :40]  # a row slice and a transposed view, written in place
    y_ref, s_ref = _reference(x, r, None, 1e-5)
    gemsops.ops.fused_add_rms_norm(x, r, None, 1e-5)
    assert_close(base_r.t()[:, :40], s_ref)
    assert_close(base_x[:, 3:43], y_ref.float())
    x64, r64 = randn(3, 8, dtype=torch.float64), randn(3, 8, dtype=torch.float64)
    w64 = randn(8, dtype=torch.float64)
    y_ref, s_ref = _reference(x64, r64, w64, 1e-6)
    gemsops.ops.fused_add_rms_norm(x64, r64, w64, 1e-6)  # fp64: the torch composite
    assert_close(x64, y_ref)
    assert_close(r64, s_ref)
    e = randn(0, 8)
    gemsops.ops.fused_add_rms_norm(e, randn(0, 8), randn(8))
    assert e.shape == (0, 8)


def test_autograd_path_fp64_fallback():
    x, r, w = (randn(*s, dtype=torch.float64).requires_grad_() for s in ((3, 8), (3, 8), (8,)))
    y, s = gemsops.ops.fused_add_rms_norm(x, r, w, 1e-6)
    gx, gr, gw = torch.autograd.grad(y.sum() + (s * s).sum(), (x, r, w))
    s_ref = x + r
    y_ref = torch.nn.functional.rms_norm(s_ref, [8], w, 1e-6)
    refs = torch.autograd.grad(y_ref.sum() + (s_ref * s_ref).sum(), (x, r, w))
    for got, ref in zip((gx, gr, gw), refs):
        assert_close(got, ref)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_autograd_path_matches_torch(dtype):
    shape = (2, 3, 40)
    x = randn(*shape, dtype=dtype).requires_grad_()
    r = randn(*shape, dtype=dtype).requires_grad_()
    w = randn(40, dtype=dtype).requires_grad_()
    gy, gs = randn(*shape, dtype=dtype), randn(*shape, dtype=dtype)
    y, s = gemsops.ops.fused_add_rms_norm(x, r, w, 1e-6)
    grads = torch.autograd.grad((y, s), (x, r, w), (gy, gs))
    xd, rd, wd = (t.detach().double().requires_grad_() for t in (x, r, w))
    s_ref = xd + rd
    y_ref = torch.nn.functional.rms_norm(s_ref, [40], wd, 1e-6)
    refs = torch.autograd.grad((y_ref, s_ref), (xd, rd, wd), (gy.double(), gs.double()))
    assert_close(s, s_ref.to(dtype), dtype)
    assert_close(y, y_ref.to(dtype), dtype, scale=2)
    for got, ref in zip(grads, refs):
        assert got.dtype == dtype
        assert_close(got, ref.to(dtype), dtype, scale=4)


def test_64_bit_offsets_variant(monkeypatch):
    # inputs past 2**31 elements take the kernel's 64-bit offsets (checked for real on the
    # GPU in test_past_2_31_elements.py); here the same variant runs on small inputs
    module = importlib.import_module("gemsops.ops.fused_add_rms_norm")  # the package's name is the function

    monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    monkeypatch.setattr(module, "_torch_fused_add_rms_norm", None)  # the torch path would now raise
    for shape in ((5, 37), (3, 2, 40)):
        x, r, w = randn(*shape), randn(*shape), randn(shape[-1])
        y_ref, s_ref = _reference(x, r, w, 1e-6)
        gemsops.ops.fused_add_rms_norm(x, r, w, 1e-6)
        assert_close(r, s_ref)
        assert_close(x, y_ref.float(), scale=2)

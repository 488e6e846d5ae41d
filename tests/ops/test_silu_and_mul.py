"""silu_and_mul / gelu_and_mul against plain torch (float64 reference), forward and backward."""
import importlib

import pytest
import torch

import gemsops
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn

SHAPES = [(5, 14), (3, 2, 300), (1, 2), (7, 258)]
if ON_GPU:
    SHAPES += [(4096, 2 * 14336), (1, 2 * 11008), (333, 2 * 4096)]


def _ref(x, kind):
    """The gated activation in float64 (differentiable when ``x`` is a float64 leaf)."""
    xd = x if x.dtype == torch.float64 else x.detach().double()
    d = x.shape[-1] // 2
    a, b = xd[..., :d], xd[..., d:]
    if kind == "silu":
        return torch.nn.functional.silu(a) * b
    return torch.nn.functional.gelu(a, approximate=kind) * b


def _gems(x, kind, out=None):
    if kind == "silu":
        return gemsops.ops.silu_and_mul(x, out=out)
    return gemsops.ops.gelu_and_mul(x, approximate=kind, out=out)


@pytest.mark.parametrize("kind", ["silu", "none", "tanh"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward(shape, dtype, kind):
    x = (randn(*shape, dtype=dtype) * 2).requires_grad_()
    y = _gems(x, kind)
    assert y.shape == shape[:-1] + (shape[-1] // 2,) and y.dtype == dtype
    assert_close(y, _ref(x, kind).to(dtype), dtype, scale=2)
    g = randn(*y.shape, dtype=dtype)
    (gx,) = torch.autograd.grad(y, x, g)
    xd = x.detach().double().requires_grad_()
    (ref,) = torch.autograd.grad(_ref(xd, kind), xd, g.double())
    assert_close(gx, ref.to(dtype), dtype, scale=4)


def test_repeated_calls_use_each_calls_data():
    # the second call of a signature takes the planned launch; each must read its own input
    for kind, fn in (("silu", gemsops.ops.silu_and_mul), ("silu", gemsops.ops.silu_and_mul),
                     ("none", gemsops.ops.gelu_and_mul)):
        x = randn(3, 70)[:, 3:67]  # sliced rows: one stride, no copy
        assert_close(fn(x), _ref(x, kind).float())


def test_out_views_and_fallbacks():
    x = randn(6, 40)[:, 2:34]  # a slice of a wider buffer
    out = torch.empty(6, 16, device=DEVICE)
    assert gemsops.ops.silu_and_mul(x, out=out) is out
    assert_close(out, _ref(x, "silu").float())
    out_t = torch.empty(16, 6, device=DEVICE).t()  # non-row-addressable out: written back
    gemsops.ops.gelu_and_mul(x, "tanh", out=out_t)
    assert_close(out_t, _ref(x, "tanh").float())
    x64 = randn(3, 10, dtype=torch.float64)  # fp64: torch's composite
    assert_close(gemsops.ops.silu_and_mul(x64), _ref(x64, "silu"))
    assert gemsops.ops.silu_and_mul(randn(0, 8)).shape == (0, 4)
    with pytest.raises(ValueError):
        gemsops.ops.gelu_and_mul(x, approximate="erf")
    h = randn(2, 6, dtype=torch.float16)
    h[0, 0], h[1, 1] = float("inf"), float("nan")
    assert_close(gemsops.ops.silu_and_mul(h), _ref(h, "silu").half(), equal_nan=True)


@pytest.mark.parametrize("kind", ["silu", "tanh"])
def test_64_bit_offsets_variant(monkeypatch, kind):
    # inputs past 2**31 elements take the kernels' 64-bit offsets (checked for real on the
    # GPU in test_past_2_31_elements.py); here the same variant runs on a small input
    module = importlib.import_module("gemsops.ops.silu_and_mul")  # the package's name is the function

    monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    monkeypatch.setattr(module, "_torch_gated", None)  # the torch path would now raise
    x = (randn(5, 2 * 37) * 2).requires_grad_()
    y = _gems(x, kind)
    assert_close(y, _ref(x, kind).float(), scale=2)
    g = randn(*y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    xd = x.detach().double().requires_grad_()
    (ref,) = torch.autograd.grad(_ref(xd, kind), xd, g.double())
    assert_close(gx, ref.float(), scale=4)

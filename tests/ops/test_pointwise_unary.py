"""Unary math and activations, forward and backward: values, NaN/inf, dtypes, out=, in-place."""
import pytest
import torch
import torch.nn.functional as F

from gemsops.ops import _pointwise
from tests.ops._pointwise_check import check, make, run_gems
from tests.util import DEVICE, FLOAT_DTYPES

aten = torch.ops.aten

# op name -> (torch function, input domain): "any" values, or "positive" (log, sqrt...)
UNARY = {
    "neg": (torch.neg, "any"), "abs": (torch.abs, "any"), "reciprocal": (torch.reciprocal, "any"),
    "sqrt": (torch.sqrt, "positive"), "rsqrt": (torch.rsqrt, "positive"), "exp": (torch.exp, "any"),
    "exp2": (torch.exp2, "any"), "expm1": (torch.expm1, "any"), "log": (torch.log, "positive"),
    "log2": (torch.log2, "positive"), "log10": (torch.log10, "positive"), "log1p": (torch.log1p, "positive"),
    "sin": (torch.sin, "any"), "cos": (torch.cos, "any"), "tan": (torch.tan, "any"), "erf": (torch.erf, "any"),
    "tanh": (torch.tanh, "any"), "sigmoid": (torch.sigmoid, "any"), "relu": (torch.relu, "any"),
    "silu": (F.silu, "any"), "gelu": (F.gelu, "any"),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    fn, domain = UNARY[name]
    for dtype in FLOAT_DTYPES:
        x = make(6, 4, dtype=dtype, specials=dtype == torch.float32, positive=domain == "positive").t()
        check(name, fn, x)
    x = make(5, positive=domain == "positive")
    check(name, fn, x[::2])  # strided
    check(name, fn, torch.tensor(0.7, device=DEVICE))  # 0-d
    check(name, fn, make(0, 3))  # empty
    if name not in ("silu", "gelu", "relu"):  # no out= in their Python API
        check(name, lambda t: getattr(torch, name)(t, out=torch.empty_like(t)), x)
    in_place = getattr(aten, name + "_").default
    check(name, lambda t: in_place(t), x)


def test_transcendentals_near_zero_and_far_out():
    # cancellation-prone ranges: expm1/log1p/tanh near 0, saturation for large |x|
    x = torch.tensor([-1e-7, -1e-4, -0.2, -0.26, 1e-7, 1e-4, 0.2, 0.26, 5.0, -5.0, 30.0, -30.0, 100.0, -100.0],
                     device=DEVICE)
    for name in ("expm1", "tanh", "sigmoid", "silu", "gelu", "erf"):
        check(name, UNARY[name][0], x)
    check("log1p", torch.log1p, x.abs() * torch.tensor([1, -1] * 7, device=DEVICE).clamp(min=-0.99) * 0.9)
    check("gelu", F.gelu, x, approximate="tanh")
    check("gelu", F.gelu, x.double(), approximate="tanh")
    check("expm1", torch.expm1, x.double())
    check("tanh", torch.tanh, x.double())


def test_unrolled_programs_cover_every_element():
    # gelu, erf and tanh run several blocks per program on large contiguous tensors: sizes
    # that end inside a program's last block and just past a program
    span = _pointwise.BLOCK * 4
    start = max(_pointwise.UNROLL_FROM, span)
    for n in (start + 2 * span + 777, start + 1):
        x = make(n)
        check("gelu", F.gelu, x)
        check("gelu", F.gelu, x.bfloat16())
        check("erf", torch.erf, x)
        check("tanh", torch.tanh, x)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_unary_integer_inputs(dtype):
    x = make(7, dtype=dtype, low=1, high=9)
    for name in ("sqrt", "exp", "log", "sin", "sigmoid", "tanh"):  # promoted to float
        check(name, UNARY[name][0], x)
    if dtype != torch.bool:
        check("neg", torch.neg, x)
        check("abs", torch.abs, x)
        check("relu", torch.relu, x - 4 if dtype != torch.uint8 else x)
    with pytest.raises(RuntimeError):
        run_gems("sqrt", lambda t: t.sqrt_(), x)  # float result into an integer tensor


def test_relu_and_threshold_on_nan():
    x = torch.tensor([float("nan"), -1.0, 0.0, -0.0, 2.0, -float("inf"), float("inf")], device=DEVICE)
    got = check("relu", torch.relu, x)
    assert torch.isnan(got[0])
    g = torch.linspace(-1, 1, 7, device=DEVICE)
    check("threshold_backward", aten.threshold_backward, g, x, 0.0)
    check("threshold_backward", aten.threshold_backward, g, x, -0.5)


BACKWARD = {
    "gelu_backward": lambda g, x: aten.gelu_backward(g, x),
    "gelu_backward_tanh": lambda g, x: aten.gelu_backward(g, x, approximate="tanh"),
    "silu_backward": aten.silu_backward,
    "sigmoid_backward": lambda g, x: aten.sigmoid_backward(g, torch.sigmoid(x)),
    "tanh_backward": lambda g, x: aten.tanh_backward(g, torch.tanh(x)),
    "threshold_backward": lambda g, x: aten.threshold_backward(g, x, 0),
}


@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_backward(name):
    family = name.removesuffix("_tanh")
    for dtype in FLOAT_DTYPES:
        g, x = make(4, 6, dtype=dtype), make(4, 6, dtype=dtype, specials=dtype == torch.float32)
        check(family, BACKWARD[name], g, x, scale=2)
    check(family, BACKWARD[name], make(6, 4).t()[:, ::2], make(1, 3).expand(4, 3))


def test_backward_out_and_autograd():
    g, x = make(3, 4), make(3, 4)
    out = torch.empty(3, 4, device=DEVICE)
    check("silu_backward", lambda a, b: aten.silu_backward.grad_input(a, b, grad_input=out), g, x)
    check("gelu_backward", lambda a, b: aten.gelu_backward.grad_input(a, b, approximate="tanh", grad_input=out), g, x)

    def grads(t):
        t = t.detach().requires_grad_()
        (F.gelu(t) + F.silu(t) + torch.sigmoid(t) + torch.tanh(t) + torch.relu(t)).sum().backward()
        return t.grad

    got, logged = run_gems(["gelu_backward", "silu_backward", "sigmoid_backward", "tanh_backward",
                            "threshold_backward"], grads, x)
    assert {"gelu_backward", "silu_backward", "sigmoid_backward", "tanh_backward", "threshold_backward"} <= set(logged)
    torch.testing.assert_close(got, grads(x), atol=1e-5, rtol=1e-5)


def test_gelu_unknown_approximate_is_torchs_error():
    with pytest.raises(RuntimeError):
        run_gems("gelu", F.gelu, make(3), approximate="fast")

"""softmax (_softmax, _softmax.out, _softmax_backward_data) against torch, reference in float64."""
import importlib

import pytest
import torch

import gemsops
from gemsops.ops.softmax import _softmax, _softmax_backward_data, _softmax_out
from gemsops.runtime.oplog import read_log
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn, reference

# (shape, dim): last dim narrow/odd, wider than the interpreter's one-pass limit (looped),
# middle and first dims (strided kernel), and 1-D
CASES = [((5, 7), -1), ((3, 300), 1), ((2, 3, 33), 2), ((4, 6, 5), 1), ((4, 6, 5), 0), ((2, 300, 3), 1), ((9,), 0)]
if ON_GPU:
    CASES += [((64, 4096), -1), ((16, 32768), -1), ((8, 1000, 64), 1), ((128, 50257), -1)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,dim", CASES)
def test_forward_and_backward_kernels(shape, dim, dtype):
    x = randn(*shape, dtype=dtype) * 3
    y = _softmax(x, dim, False)
    ref = reference(torch.softmax, x, dim)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, ref.to(dtype), dtype)
    g = randn(*shape, dtype=dtype)
    dx = _softmax_backward_data(g, y, dim, dtype)
    # judged on the output it is given (y in the input's dtype), as in test_log_softmax
    dref = reference(torch.ops.aten._softmax_backward_data, g, y, dim, torch.float64)
    assert_close(dx, dref.to(dtype), dtype, scale=2)


def test_non_contiguous_inputs():
    base = randn(6, 40)
    for x, dim in [(base[:, 3:30], 1), (base.t(), 1), (base.t(), 0), (base[::2], -1), (randn(4, 5, 6).permute(2, 0, 1), 1)]:
        assert_close(_softmax(x, dim, False), reference(torch.softmax, x, dim).float())
        g = randn(*x.shape)
        y = torch.softmax(x, dim)
        assert_close(_softmax_backward_data(g, y, dim, torch.float32),
                     torch.ops.aten._softmax_backward_data(g, y, dim, torch.float32))


def test_repeated_signatures_read_their_own_inputs():
    # from its second call on, a signature takes a planned launch (forward and backward):
    # each call must read its own tensors, and other dims, layouts or log must not share it
    from gemsops.ops.log_softmax import _log_softmax
    layouts = [lambda: randn(6, 40)[:, 3:35], lambda: randn(32, 6).t(), lambda: randn(6, 32)]  # all [6, 32]
    for _ in range(3):
        for make in layouts:
            x = make()
            for dim in (1, 0, -1):
                assert_close(_softmax(x, dim, False), reference(torch.softmax, x, dim).float())
                assert_close(_log_softmax(x, dim, False), reference(torch.log_softmax, x, dim).float())
                for make_y in layouts:  # the forward output's layout is part of the signature too
                    g, y = make(), make_y()  # any values will do for the formula
                    assert_close(_softmax_backward_data(g, y, dim, torch.float32),
                                 torch.ops.aten._softmax_backward_data(g, y, dim, torch.float32))


def test_zero_dim_empty_and_infinities():
    s = randn(())
    assert_close(_softmax(s, 0, False), torch.softmax(s, 0))
    e = randn(0, 5)
    assert _softmax(e, 1, False).shape == (0, 5)
    assert _softmax(randn(3, 0), 1, False).shape == (3, 0)
    for width in (7, 300):  # one pass and looped
        x = randn(4, width)
        x[0] = -float("inf")  # all -inf: NaN like torch
        x[1, : width // 2] = -float("inf")  # -inf prefix, then finite values
        x[2, 3] = float("nan")
        x[3, 5] = float("inf")
        assert_close(_softmax(x, 1, False), torch.softmax(x, 1), equal_nan=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_few_wide_rows_split_into_chunks(monkeypatch, dtype):
    # rows much wider than one program should take (a decode batch's logits): each row is
    # cut into chunks whose partial max/sum are combined; ragged last chunk, -inf and NaN
    mod = importlib.import_module("gemsops.ops.softmax")
    splits = []
    real = mod._split_launch
    monkeypatch.setattr(mod, "_split_launch", lambda *a: splits.append(real(*a)) or splits[-1])
    width = 4 * mod.ONE_PASS_MAX + 37
    x = randn(3, width, dtype=dtype) * 4
    x[1, : width // 2] = -float("inf")  # whole chunks of -inf, then finite values
    for log in (False, True):
        fn = torch.log_softmax if log else torch.softmax
        y = mod.softmax_forward(x, 1, dtype, log)
        assert_close(y, reference(fn, x, 1).to(dtype), dtype, scale=2)
        y32 = mod.softmax_forward(x, -1, torch.float32, log)  # half_to_float's fp32 output
        assert_close(y32, reference(fn, x, 1).float(), dtype, scale=2)
    assert splits and all(s is not None for s in splits)
    odd = randn(2, width)
    odd[0] = -float("inf")  # every chunk -inf: NaN like torch
    odd[1, 5] = float("nan")
    assert_close(mod.softmax_forward(odd, 1, torch.float32, False), torch.softmax(odd, 1), equal_nan=True)
    assert_close(mod.softmax_forward(odd, 1, torch.float32, True), torch.log_softmax(odd, 1), equal_nan=True)
    view = randn(2, width + 5)[:, 5:]  # a row stride that is not the width
    assert_close(mod.softmax_forward(view, 1, torch.float32, False), reference(torch.softmax, view, 1).float())
    assert all(s is not None for s in splits)


def test_half_to_float_and_out():
    x = randn(3, 300, dtype=torch.float16)
    y = _softmax(x, 1, True)
    assert y.dtype == torch.float32
    assert_close(y, reference(torch.softmax, x, 1).float())
    dx = _softmax_backward_data(torch.ones_like(y), y, 1, torch.float16)
    assert dx.dtype == torch.float16
    out = torch.empty(3, 300, dtype=torch.float16, device=DEVICE)
    assert _softmax_out(x, 1, False, out=out) is out
    assert_close(out, reference(torch.softmax, x, 1).half())


def test_routed_to_native():
    x = randn(4, 9, dtype=torch.float64)
    assert_close(_softmax(x, 1, False), torch.softmax(x, 1))  # fp64: torch's kernel
    with pytest.raises((IndexError, RuntimeError)):
        _softmax(randn(3, 4), 2, False)
    with pytest.raises(RuntimeError):
        _softmax(randn(3, 4), 1, True)  # half_to_float on fp32: torch's error


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_autograd_through_enable(tmp_path, dtype):
    log = tmp_path / "ops.log"
    x = randn(3, 5, 37, dtype=dtype).requires_grad_()
    g = randn(3, 5, 37, dtype=dtype)
    grads = []
    for dim in (-1, 1):
        y = torch.softmax(x, dim)
        (gx,) = torch.autograd.grad(y, x, g)
        with gemsops.use_gems(include=["softmax"], record=True, path=log):
            yg = torch.softmax(x, dim)
            (gxg,) = torch.autograd.grad(yg, x, g)
        assert_close(yg, y, dtype)
        assert_close(gxg, gx, dtype, scale=2)
        grads.append(gxg)
    ops = [op for _, op, _ in read_log(log)]
    assert ops.count("aten::_softmax") == 2 and ops.count("aten::_softmax_backward_data") == 2


def test_public_softmax_is_differentiable():
    x = randn(4, 21).requires_grad_()
    y = gemsops.ops.softmax(x, 1)
    (gx,) = torch.autograd.grad(y, x, torch.arange(21.0, device=DEVICE).expand(4, 21))
    x2 = x.detach().requires_grad_()
    (gr,) = torch.autograd.grad(torch.softmax(x2, 1), x2, torch.arange(21.0, device=DEVICE).expand(4, 21))
    assert_close(gx, gr)


def test_out_aliasing_input_and_wrong_shape_go_to_torch():
    x = randn(4, 30)
    expected = torch.softmax(x, 1)
    _softmax_out(x, 1, False, out=x)  # in place through out=
    assert_close(x, expected)
    out = torch.empty(0, device=DEVICE)
    _softmax_out(expected, 0, False, out=out)  # torch resizes out
    assert_close(out, torch.softmax(expected, 0))


def test_broadcast_input_and_expanded_grad():
    x = randn(1, 1, 19).expand(3, 4, 19)
    y = _softmax(x, -1, False)
    assert_close(y, reference(torch.softmax, x, -1).float())
    g = torch.ones((), device=DEVICE).expand(3, 4, 19)
    assert_close(_softmax_backward_data(g, y, -1, torch.float32),
                 torch.ops.aten._softmax_backward_data(g, y, -1, torch.float32))
    assert_close(_softmax_backward_data(g, y, 1, torch.float32),
                 torch.ops.aten._softmax_backward_data(g, y, 1, torch.float32))

"""group_norm: aten native_group_norm / native_group_norm_backward against torch in float64."""
import re

import pytest
import torch

import gemsops
from gemsops.ops.group_norm import native_group_norm, native_group_norm_backward
from gemsops.runtime.oplog import read_log
from tests.util import FLOAT_DTYPES, ON_GPU, assert_close, randn, reference

# (N, C, spatial, groups): small rows, rows longer than the interpreter's one-pass limit
# and than one tile of the elementwise dx kernel
CASES = [(2, 4, (3, 3), 2), (1, 6, (5,), 3), (2, 8, (7, 7), 2), (3, 3, (), 1), (1, 2, (50, 50), 1)]
if ON_GPU:
    CASES += [(4, 320, (32, 32), 32), (2, 64, (64, 64), 8)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_forward_backward_kernels(case, dtype, affine):
    n, c, spatial, groups = case
    hw = 1
    for s in spatial:
        hw *= s
    x = randn(n, c, *spatial, dtype=dtype) * 2 + 1
    w = randn(c, dtype=dtype) if affine else None
    b = randn(c, dtype=dtype) if affine else None
    args = (n, c, hw, groups, 1e-5)
    y, mean, rstd = native_group_norm(x, w, b, *args)
    nat = torch.ops.aten.native_group_norm(x, w, b, *args)
    ref = reference(torch.ops.aten.native_group_norm, x, w, b, *args)
    for got, e, r in zip((y, mean, rstd), nat, ref):
        assert got.dtype == e.dtype and got.shape == e.shape
        assert_close(got, r.to(got.dtype), got.dtype, scale=4)
    g = randn(*x.shape, dtype=dtype)
    mask = [True, affine, affine]
    got = native_group_norm_backward(g, x, mean, rstd, w, n, c, hw, groups, mask)
    # The backward is judged on the statistics it is given: for fp16/bf16 those are stored in
    # the input's dtype (torch's rule too), and dw = sum_hw g*(x - mean)*rstd over N*HxW terms
    # turns rstd's half-ulp rounding (2**-12 relative in fp16) into more than the output's
    # tolerance, even for an exact float64 backward. Exact statistics would test the rounding.
    ref_b = reference(torch.ops.aten.native_group_norm_backward, g, x, mean, rstd, w, n, c, hw, groups, mask)
    for a, e in zip(got, ref_b):
        if e is None:
            assert a is None
        else:
            assert_close(a, e.to(a.dtype), a.dtype, scale=8)


@pytest.mark.parametrize("mask", [[True, False, False], [False, True, False], [False, False, True],
                                  [False, True, True], [True, True, False]])
def test_each_output_mask(mask):
    # autograd asks only for the gradients it needs; each combination is computed alone
    x, w, g = randn(3, 6, 5, 7), randn(6), randn(3, 6, 5, 7)
    args = (3, 6, 35, 3)
    _, mean, rstd = native_group_norm(x, w, None, *args, 1e-5)
    got = native_group_norm_backward(g, x, mean, rstd, w, *args, mask)
    ref = reference(torch.ops.aten.native_group_norm_backward, g, x, mean, rstd, w, *args, mask)
    for a, e in zip(got, ref):
        assert (a is None) == (e is None)
        if a is not None:
            assert_close(a, e.float(), scale=8)


def test_parameter_gradients_of_an_input_with_a_large_mean():
    # dw = sum over n, hw of g * (x - mean) * rstd. Summing g*x and g separately and
    # subtracting mean * sum(g) afterwards cancels here (mean 100, spread 0.01) and misses
    # float32's tolerance by orders of magnitude; the kernel centres x before the product.
    x = randn(2, 8, 16, 16) * 0.01 + 100
    w, g = randn(8), randn(2, 8, 16, 16)
    args = (2, 8, 256, 4)
    _, mean, rstd = native_group_norm(x, w, None, *args, 1e-5)
    got = native_group_norm_backward(g, x, mean, rstd, w, *args, [True, True, True])
    ref = reference(torch.ops.aten.native_group_norm_backward, g, x, mean, rstd, w, *args, [True, True, True])
    for a, e in zip(got, ref):
        assert_close(a, e.float(), scale=8)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_autograd_through_enable(tmp_path, dtype):
    log = tmp_path / "ops.log"
    x = randn(2, 6, 4, 3, dtype=dtype).requires_grad_()
    w = randn(6, dtype=dtype).requires_grad_()
    b = randn(6, dtype=dtype).requires_grad_()
    g = randn(2, 6, 4, 3, dtype=dtype)
    y = torch.nn.functional.group_norm(x, 3, w, b)
    grads = torch.autograd.grad(y, (x, w, b), g)
    with gemsops.use_gems(include=["group_norm"], record=True, path=log):
        y2 = torch.nn.functional.group_norm(x, 3, w, b)
        grads2 = torch.autograd.grad(y2, (x, w, b), g)
    assert_close(y2, y, dtype, scale=2)
    for a, e in zip(grads2, grads):
        assert_close(a, e, dtype, scale=8)
    ops = [op for _, op, _ in read_log(log)]
    assert "aten::native_group_norm" in ops and "aten::native_group_norm_backward" in ops


def test_routed_to_native():
    # channels-last goes to torch's kernel, which takes it on CPU but rejects it on CUDA (the
    # composite group_norm makes the input contiguous first): gems must do exactly what torch does
    x = randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
    args = (None, None, 2, 4, 9, 2, 1e-5)
    try:
        nat = torch.ops.aten.native_group_norm(x, *args)
    except RuntimeError as err:
        with pytest.raises(RuntimeError, match=re.escape(str(err).splitlines()[0])):
            native_group_norm(x, *args)
    else:
        for a, e in zip(native_group_norm(x, *args), nat):
            assert_close(a, e)
    d = randn(2, 4, 3, dtype=torch.float64)
    assert_close(native_group_norm(d, None, None, 2, 4, 3, 2, 1e-5)[0],
                 torch.ops.aten.native_group_norm(d, None, None, 2, 4, 3, 2, 1e-5)[0])


def test_public_group_norm_is_differentiable():
    x = randn(2, 4, 5).requires_grad_()
    w, b = randn(4).requires_grad_(), randn(4).requires_grad_()
    g = randn(2, 4, 5)
    grads = torch.autograd.grad(gemsops.ops.group_norm(x, 2, w, b), (x, w, b), g)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    refs = torch.autograd.grad(torch.nn.functional.group_norm(xd, 2, wd, bd), (xd, wd, bd), g.double())
    for a, e in zip(grads, refs):
        assert_close(a, e.float(), scale=8)
    xb = x.detach().requires_grad_()
    (gx, gb) = torch.autograd.grad(gemsops.ops.group_norm(xb, 2, None, b), (xb, b), g)
    xd2 = xb.detach().double().requires_grad_()  # torch's CPU backward rejects bias without weight
    (rx,) = torch.autograd.grad(torch.nn.functional.group_norm(xd2, 2, None, None), xd2, g.double())
    assert_close(gx, rx.float(), scale=8)
    assert_close(gb, g.double().sum((0, 2)).float(), scale=8)

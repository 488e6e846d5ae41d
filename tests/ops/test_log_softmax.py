"""log_softmax (_log_softmax, .out, _log_softmax_backward_data) against torch in float64."""
import pytest
import torch

import gemsops
from gemsops.ops.log_softmax import _log_softmax, _log_softmax_backward_data, _log_softmax_out
from gemsops.runtime.oplog import read_log
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn, reference

CASES = [((5, 7), -1), ((3, 300), 1), ((4, 6, 5), 1), ((2, 300, 3), 1), ((6, 4), 0)]
if ON_GPU:
    CASES += [((64, 4096), -1), ((8, 128256), -1), ((8, 1000, 64), 1)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,dim", CASES)
def test_forward_and_backward_kernels(shape, dim, dtype):
    x = randn(*shape, dtype=dtype) * 3
    y = _log_softmax(x, dim, False)
    ref = reference(torch.log_softmax, x, dim)
    assert_close(y, ref.to(dtype), dtype, scale=2)
    g = randn(*shape, dtype=dtype)
    dx = _log_softmax_backward_data(g, y, dim, dtype)
    # The backward is judged on the output it is given, y in the input's dtype: from an exact
    # float64 log-softmax, dx = g - exp(y) * sum(g) would also carry y's rounding (up to half an
    # ulp of |y|, 2**-9 at |y| ~ 5 in fp16) times sum(g), which grows like sqrt(row length).
    dref = reference(torch.ops.aten._log_softmax_backward_data, g, y, dim, torch.float64)
    assert_close(dx, dref.to(dtype), dtype, scale=2)


def test_edge_cases_and_out():
    assert_close(_log_softmax(randn(()), 0, False), torch.log_softmax(randn(()), 0))
    assert _log_softmax(randn(0, 3), 1, False).shape == (0, 3)
    for width in (7, 300):
        x = randn(3, width)
        x[0] = -float("inf")
        x[1, :width // 2] = -float("inf")
        x[2, 1] = float("nan")
        assert_close(_log_softmax(x, 1, False), torch.log_softmax(x, 1), equal_nan=True)
    x = randn(5, 40)[:, 1:]
    out = torch.empty(5, 39, device=DEVICE)
    assert _log_softmax_out(x, -1, False, out=out) is out
    assert_close(out, reference(torch.log_softmax, x, -1).float())
    h = randn(2, 30, dtype=torch.bfloat16)
    assert_close(_log_softmax(h, 1, True), reference(torch.log_softmax, h, 1).float())
    d = randn(3, 4, dtype=torch.float64)
    assert_close(_log_softmax(d, 1, False), torch.log_softmax(d, 1))  # routed to native


def test_cross_entropy_gradients_through_gems(tmp_path):
    log = tmp_path / "ops.log"
    logits = randn(6, 11).requires_grad_()
    target = torch.randint(0, 11, (6,), device=DEVICE)
    loss = torch.nn.functional.cross_entropy(logits, target)
    (g,) = torch.autograd.grad(loss, logits)
    with gemsops.use_gems(include=["log_softmax"], record=True, path=log):
        loss_g = torch.nn.functional.cross_entropy(logits, target)
        (gg,) = torch.autograd.grad(loss_g, logits)
    assert_close(loss_g, loss)
    assert_close(gg, g)
    ops = {op for _, op, _ in read_log(log)}
    assert {"aten::_log_softmax", "aten::_log_softmax_backward_data"} <= ops


def test_public_log_softmax_is_differentiable():
    x = randn(3, 17, dtype=torch.float64).float().requires_grad_()
    g = randn(3, 17)
    (gx,) = torch.autograd.grad(gemsops.ops.log_softmax(x, 1), x, g)
    x2 = x.detach().double().requires_grad_()
    (gr,) = torch.autograd.grad(torch.log_softmax(x2, 1), x2, g.double())
    assert_close(gx, gr.float())

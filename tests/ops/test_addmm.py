"""addmm (nn.Linear's forward): bias broadcasting, alpha/beta, in-place, out=, nn.Linear end to end."""
import importlib

import pytest
import torch

import gemsops
from gemsops import ops
from gemsops.ops.addmm import addmm_inplace, addmm_out
from tests.ops._matmul_util import check, operand, same_as_native
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close

M, N, K = 21, 18, 27


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("bias_shape", [(N,), (1, N), (M, 1), (M, N), ()])
def test_addmm_bias_broadcast(dtype, bias_shape):
    torch.manual_seed(0)
    x = operand(M, K, dtype)
    w = operand(N, K, dtype)
    bias = torch.randn(bias_shape, dtype=dtype, device=DEVICE)
    check(ops.addmm(bias, x, w.t()), torch.addmm, bias, x, w.t(), k=K)


@pytest.mark.parametrize("beta,alpha", [(1, 1), (0.5, 2.0), (0, 1), (2, -0.25), (True, 3)])
def test_addmm_alpha_beta(beta, alpha):
    torch.manual_seed(1)
    x, y = operand(M, K, torch.float32, "t"), operand(K, N, torch.float32, "s")
    bias = torch.randn(M, N, device=DEVICE)
    if beta == 0:
        bias[2, 3] = float("nan")  # beta == 0 ignores self, NaN included
    got = ops.addmm(bias, x, y, beta=beta, alpha=alpha)
    assert not got.isnan().any()
    check(got, lambda b, x, y: torch.addmm(b, x, y, beta=beta, alpha=alpha), bias, x, y, k=K)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_addmm_small_m_split_k(dtype):
    torch.manual_seed(2)
    x, w = operand(3, 50, dtype), operand(20, 50, dtype)
    bias = torch.randn(20, dtype=dtype, device=DEVICE)
    check(ops.addmm(bias, x, w.t(), beta=0.5, alpha=2), lambda b, x, y: torch.addmm(b, x, y, beta=0.5, alpha=2),
          bias, x, w.t(), k=50)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_repeated_call_signature_serves_new_tensors(dtype):
    # the kept plan of a signature (shapes, strides, dtypes, beta and alpha with their
    # types) serves later calls: new values, beta == 0 with NaN in the bias, a bool beta
    calls = importlib.import_module("gemsops.ops.addmm")._CALLS
    for step in range(3):
        torch.manual_seed(30 + step)
        x, w = operand(M, K, dtype), operand(N, K, dtype)
        bias = torch.randn(N, dtype=dtype, device=DEVICE)
        check(ops.addmm(bias, x, w.t()), torch.addmm, bias, x, w.t(), k=K)
        nan_bias = bias.clone()
        nan_bias[3] = float("nan")
        got = ops.addmm(nan_bias, x, w.t(), beta=0)
        assert not got.isnan().any()
        check(got, lambda b, x, y: torch.addmm(b, x, y, beta=0), nan_bias, x, w.t(), k=K)
        check(ops.addmm(bias, x, w.t(), beta=True, alpha=2.0),
              lambda b, x, y: torch.addmm(b, x, y, beta=True, alpha=2.0), bias, x, w.t(), k=K)
        row_bias = torch.randn(M, 1, dtype=dtype, device=DEVICE)  # another bias layout
        check(ops.addmm(row_bias, x, w.t()), torch.addmm, row_bias, x, w.t(), k=K)
    key = (bias.shape, bias.stride(), dtype, x.shape, x.stride(), dtype, (K, N), w.t().stride(), dtype, int, 0, int, 1)
    assert key in calls
    same_as_native(ops.addmm, torch.addmm, bias.float(), x, w.t())  # same shapes, mixed dtypes


def test_addmm_k0_and_empty():
    bias = torch.randn(N, device=DEVICE)
    got = ops.addmm(bias, torch.randn(M, 0, device=DEVICE), torch.randn(0, N, device=DEVICE), beta=3)
    torch.testing.assert_close(got, (3 * bias).expand(M, N))
    nan_bias = torch.full((N,), float("nan"), device=DEVICE)
    got = ops.addmm(nan_bias, torch.randn(M, 0, device=DEVICE), torch.randn(0, N, device=DEVICE), beta=0)
    torch.testing.assert_close(got, torch.zeros(M, N, device=DEVICE))
    got = ops.addmm(bias, torch.randn(0, K, device=DEVICE), torch.randn(K, N, device=DEVICE))
    assert got.shape == (0, N)
    got = ops.addmm(torch.randn(M, 0, device=DEVICE), torch.randn(M, K, device=DEVICE),
                    torch.randn(K, 0, device=DEVICE))
    assert got.shape == (M, 0)


def test_addmm_inplace_and_out():
    torch.manual_seed(3)
    x, y = torch.randn(M, K, device=DEVICE), torch.randn(K, N, device=DEVICE)
    c = torch.randn(M, N, device=DEVICE)
    want = torch.addmm(c, x, y, beta=0.5, alpha=2)
    got = addmm_inplace(c, x, y, beta=0.5, alpha=2)
    assert got is c
    assert_close(c, want, scale=3)
    out = torch.empty(N, M, device=DEVICE).t()
    bias = torch.randn(N, device=DEVICE)
    got = addmm_out(bias, x, y, out=out)
    assert got is out
    check(out, torch.addmm, bias, x, y, k=K)
    # out aliasing the bias exactly: an elementwise in-place update
    c = torch.randn(M, N, device=DEVICE)
    want = torch.addmm(c, x, y)
    addmm_out(c, x, y, out=c)
    assert_close(c, want, scale=3)


def test_addmm_routed_to_native():
    x, y = torch.randn(4, 5, device=DEVICE), torch.randn(5, 6, device=DEVICE)
    b = torch.randn(6, device=DEVICE)
    same_as_native(ops.addmm, torch.addmm, b.double(), x.double(), y.double())
    same_as_native(ops.addmm, torch.addmm, b.half(), x, y)  # mixed dtypes
    same_as_native(ops.addmm, torch.addmm, torch.randn(3, device=DEVICE), x, y)  # bias does not broadcast
    same_as_native(ops.addmm, torch.addmm, torch.randn(2, 4, 6, device=DEVICE), x, y)
    x[0, 0] = float("inf")
    same_as_native(lambda *a: ops.addmm(*a, alpha=0), lambda *a: torch.addmm(*a, alpha=0), b, x, y)
    # in-place on a broadcast self is torch's error
    same_as_native(lambda *a: addmm_inplace(*a), lambda s, *a: s.addmm_(*a), b.clone(), x, y)
    # out= with the wrong shape: torch resizes it
    out = torch.empty(1, device=DEVICE)
    addmm_out(b, x, y, out=out)
    torch.testing.assert_close(out, torch.addmm(b, x, y), equal_nan=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_linear_forward_backward_under_enable(dtype, tmp_path):
    torch.manual_seed(4)
    lin = torch.nn.Linear(24, 20, dtype=dtype, device=DEVICE)
    x = torch.randn(2, 5, 24, dtype=dtype, device=DEVICE, requires_grad=True)
    g = torch.randn(2, 5, 20, dtype=dtype, device=DEVICE)

    def run():
        x.grad = None
        lin.zero_grad()
        y = lin(x)
        y.backward(g)
        return y.detach(), x.grad, lin.weight.grad, lin.bias.grad

    want = run()
    log = tmp_path / "ops.log"
    gemsops.enable(record=True, path=log)
    try:
        got = run()
    finally:
        gemsops.disable()
    for a, e in zip(got, want):
        # native CPU bf16/fp16 matmuls round differently: compare both to each other loosely
        assert_close(a, e, scale=4)
    served = log.read_text()
    assert "aten::addmm" in served and "aten::mm" in served


if ON_GPU:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("M", [1, 16, 512, 4096])
    def test_addmm_gpu_linear_shapes(dtype, M):
        torch.manual_seed(5)
        x = torch.randn(M, 4096, dtype=dtype, device=DEVICE)
        w = torch.randn(14336, 4096, dtype=dtype, device=DEVICE) / 64
        b = torch.randn(14336, dtype=dtype, device=DEVICE)
        check(ops.addmm(b, x, w.t()), torch.addmm, b, x, w.t(), k=4096)

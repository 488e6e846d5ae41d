"""bmm and baddbmm: batch strides, transposed batches, broadcast bias, edge cases."""
import pytest
import torch

from gemsops import ops
from gemsops.ops.baddbmm import baddbmm_inplace
from gemsops.ops.bmm import bmm_out
from tests.ops._matmul_util import check, same_as_native
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_bmm(dtype):
    torch.manual_seed(0)
    a = torch.randn(3, 19, 22, dtype=dtype, device=DEVICE)
    b = torch.randn(3, 17, 22, dtype=dtype, device=DEVICE).transpose(1, 2)  # q @ k^T layout
    check(ops.bmm(a, b), torch.bmm, a, b, k=22)


def test_bmm_strided_batches():
    torch.manual_seed(1)
    # batch as a middle dim (attention heads), a broadcast (0-stride) batch operand
    a = torch.randn(18, 4, 20, device=DEVICE).transpose(0, 1)
    b = torch.randn(1, 20, 9, device=DEVICE).expand(4, 20, 9)
    check(ops.bmm(a, b), torch.bmm, a, b, k=20)
    out = torch.empty(4, 9, 18, device=DEVICE).transpose(1, 2)
    assert bmm_out(a, b, out=out) is out
    check(out, torch.bmm, a, b, k=20)


def test_bmm_empty_and_k0():
    for B, M, N, K in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)]:
        got = ops.bmm(torch.randn(B, M, K, device=DEVICE), torch.randn(B, K, N, device=DEVICE))
        torch.testing.assert_close(got, torch.zeros(B, M, N, device=DEVICE))


def test_bmm_routed_to_native():
    a, b = torch.randn(2, 3, 4, device=DEVICE), torch.randn(2, 4, 5, device=DEVICE)
    same_as_native(ops.bmm, torch.bmm, a.double(), b.double())
    same_as_native(ops.bmm, torch.bmm, a, b.half())
    same_as_native(ops.bmm, torch.bmm, a, torch.randn(3, 4, 5, device=DEVICE))  # batch mismatch
    same_as_native(ops.bmm, torch.bmm, a[0], b[0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("bias_shape", [(2, 13, 11), (11,), (1, 13, 1), (2, 1, 11)])
def test_baddbmm(dtype, bias_shape):
    torch.manual_seed(2)
    a = torch.randn(2, 13, 15, dtype=dtype, device=DEVICE)
    b = torch.randn(2, 15, 11, dtype=dtype, device=DEVICE)
    bias = torch.randn(bias_shape, dtype=dtype, device=DEVICE)
    check(ops.baddbmm(bias, a, b, beta=0.5, alpha=1.5),
          lambda x, a, b: torch.baddbmm(x, a, b, beta=0.5, alpha=1.5), bias, a, b, k=15)


def test_baddbmm_beta0_inplace_k0():
    torch.manual_seed(3)
    a, b = torch.randn(2, 5, 6, device=DEVICE), torch.randn(2, 6, 7, device=DEVICE)
    bias = torch.full((2, 5, 7), float("nan"), device=DEVICE)
    got = ops.baddbmm(bias, a, b, beta=0)
    check(got, torch.bmm, a, b, k=6)
    c = torch.randn(2, 5, 7, device=DEVICE)
    want = torch.baddbmm(c, a, b, alpha=-1)
    assert baddbmm_inplace(c, a, b, alpha=-1) is c
    assert_close(c, want, scale=3)
    x = torch.randn(7, device=DEVICE)
    got = ops.baddbmm(x, torch.randn(2, 5, 0, device=DEVICE), torch.randn(2, 0, 7, device=DEVICE), beta=2)
    torch.testing.assert_close(got, (2 * x).expand(2, 5, 7))
    same_as_native(ops.baddbmm, torch.baddbmm, torch.randn(3, 7, device=DEVICE), a, b)


if ON_GPU:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("B,M,N,K", [(32, 512, 512, 128), (32, 512, 128, 512), (64, 1, 4096, 128),
                                         (8, 2048, 2048, 64)])
    def test_bmm_gpu_attention_shapes(dtype, B, M, N, K):
        torch.manual_seed(4)
        a = torch.randn(B, M, K, dtype=dtype, device=DEVICE)
        b = torch.randn(B, N, K, dtype=dtype, device=DEVICE).transpose(1, 2)
        check(ops.bmm(a, b), torch.bmm, a, b, k=K)

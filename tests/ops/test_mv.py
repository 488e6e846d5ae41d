"""mv and addmv, run as a 1-row GEMM over the transposed matrix."""
import pytest
import torch

from gemsops import ops
from gemsops.ops.mv import addmv_inplace, mv_out
from tests.ops._matmul_util import check, same_as_native
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_mv(dtype):
    torch.manual_seed(0)
    m = torch.randn(30, 41, dtype=dtype, device=DEVICE)
    v = torch.randn(41, dtype=dtype, device=DEVICE)
    check(ops.mv(m, v), torch.mv, m, v, k=41)
    mt = torch.randn(41, 30, dtype=dtype, device=DEVICE).t()  # column-major matrix
    vs = torch.randn(82, dtype=dtype, device=DEVICE)[::2]  # strided vector
    check(ops.mv(mt, vs), torch.mv, mt, vs, k=41)


def test_addmv_and_edges():
    torch.manual_seed(1)
    m, v = torch.randn(17, 23, device=DEVICE), torch.randn(23, device=DEVICE)
    for bias in (torch.randn(17, device=DEVICE), torch.randn(1, device=DEVICE), torch.tensor(2.0, device=DEVICE)):
        check(ops.addmv(bias, m, v, beta=0.5, alpha=3), lambda b, m, v: torch.addmv(b, m, v, beta=0.5, alpha=3),
              bias, m, v, k=23)
    c = torch.randn(17, device=DEVICE)
    want = torch.addmv(c, m, v)
    assert addmv_inplace(c, m, v) is c
    assert_close(c, want, scale=3)
    out = torch.empty(34, device=DEVICE)[::2]
    assert mv_out(m, v, out=out) is out
    check(out, torch.mv, m, v, k=23)
    torch.testing.assert_close(ops.mv(torch.randn(5, 0, device=DEVICE), torch.randn(0, device=DEVICE)),
                               torch.zeros(5, device=DEVICE))
    assert ops.mv(torch.randn(0, 4, device=DEVICE), torch.randn(4, device=DEVICE)).shape == (0,)
    same_as_native(ops.mv, torch.mv, m.double(), v.double())
    same_as_native(ops.mv, torch.mv, m, v.half())
    same_as_native(ops.mv, torch.mv, m, torch.randn(22, device=DEVICE))


if ON_GPU:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
    def test_mv_gpu(dtype):
        m = torch.randn(14336, 4096, dtype=dtype, device=DEVICE) / 64
        v = torch.randn(4096, dtype=dtype, device=DEVICE)
        check(ops.mv(m, v), torch.mv, m, v, k=4096)

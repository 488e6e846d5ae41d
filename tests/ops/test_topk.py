import sys

import pytest
import torch

import gemsops
import gemsops.ops.topk  # noqa: F401
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn

T = sys.modules["gemsops.ops.topk"]
topk = T.topk
ktopk = topk.__wrapped__


def check(x, k, dim, largest, kernel=True):
    v, i = (ktopk if kernel else topk)(x, k, dim, largest, True)
    rv, ri = torch.topk(x, k, dim, largest, True)
    torch.testing.assert_close(v, rv, rtol=0, atol=0, equal_nan=True)
    assert i.dtype == torch.int64 and i.shape == ri.shape
    # ties may pick other positions than torch: the values at our indices must be the values
    torch.testing.assert_close(torch.gather(x, dim, i), rv, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32])
@pytest.mark.parametrize("largest", [True, False])
def test_topk(dtype, largest):
    x = randn(1, 30).to(dtype) if dtype.is_floating_point else \
        torch.randint(-1000, 1000, (1, 30), dtype=dtype, device=DEVICE)
    check(x, 4, -1, largest)


def test_topk_dims_and_two_pass():
    check(randn(9, 2, 1), 3, 0, True)  # along a leading dim
    check(randn(1, 20), 20, 1, False)  # k == n
    n = T.MAX_SORT + 3 * T.CHUNK // 2  # several chunks, then the merge pass
    x = randn(1, n)
    x[0, n - 1] = float("nan")
    check(x, 3, -1, True)
    check(x.bfloat16(), 1, -1, False)


def test_topk_special_values_noncontiguous_native():
    x = torch.tensor([[1.0, float("nan"), -float("inf"), 3.0, float("inf"), -0.0]], device=DEVICE)
    check(x, 3, 1, True)
    check(randn(7, 1).t(), 2, 1, False)
    check(torch.randint(0, 9, (3, 8), device=DEVICE), 2, 1, True, kernel=False)  # int64
    check(randn(3, 8), 0, 1, True, kernel=False)
    with pytest.raises(RuntimeError):
        topk(randn(3, 4), 5)


def test_topk_through_enable(tmp_path):
    log = tmp_path / "log"
    logits = randn(1, 40)
    gemsops.only_enable(include=["topk"], record=True, path=log)
    v, i = torch.topk(logits, 5)
    gemsops.disable()
    torch.testing.assert_close(v, torch.topk(logits, 5).values, rtol=0, atol=0)
    assert "aten::topk" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_topk_large():
    check(randn(64, 128256, dtype=torch.bfloat16), 50, -1, True)
    check(randn(64, 32000), 128, -1, True)
    check(randn(8, 4096), 4096, -1, False)
    check(randn(4096, 3), 10, 0, True)

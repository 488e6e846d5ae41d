import sys

import pytest
import torch

import gemsops
import gemsops.ops.clone  # noqa: F401  (the module; gemsops.ops.clone is the function)
from tests.util import DEVICE, FLOAT_DTYPES, randn

kclone = sys.modules["gemsops.ops.clone"].clone.__wrapped__  # no silent native fallback


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int64, torch.bool])
def test_clone_keeps_values_and_dense_strides(dtype):
    x = randn(3, 4, 5).to(dtype)
    for view in (x, x.transpose(0, 2), x.permute(1, 2, 0), x[0], x.new_empty(0, 3), x[1, 2, 3]):
        got = kclone(view)
        same(got, torch.clone(view))
        assert got.data_ptr() != view.data_ptr() or view.numel() == 0


def test_clone_non_dense_and_memory_formats():
    x = randn(4, 6, 8)
    for view in (x[:, ::2], x[..., 1:5], x.expand(2, 4, 6, 8)[1], randn(3, 1).expand(3, 5)):
        same(kclone(view), torch.clone(view))
        same(kclone(view, memory_format=torch.contiguous_format),
             torch.clone(view, memory_format=torch.contiguous_format))
    nan = torch.tensor([float("nan"), float("inf"), -0.0], device=DEVICE)
    same(kclone(nan), nan.clone())


def test_clone_under_enable_is_served_by_gems():
    x = randn(8, 8).t()
    with gemsops.use_gems(include=["clone"]):
        y = x.clone()
    assert "clone" in gemsops.runtime.registry.declarations()
    same(y, x.clone())

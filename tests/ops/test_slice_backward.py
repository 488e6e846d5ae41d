import sys

import pytest
import torch

import gemsops
import gemsops.ops.slice_backward  # noqa: F401  (the module; the attribute is the function)
from tests.util import FLOAT_DTYPES, randn

kslice_backward = sys.modules["gemsops.ops.slice_backward"].slice_backward.__wrapped__


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "sizes, dim, start, end, step",
    [
        ((6, 8), 1, 2, 6, 1),
        ((6, 8), 0, 1, 6, 2),
        ((4, 5, 7), -1, 0, 9223372036854775807, 3),  # x[..., ::3] passes end = INT64_MAX
        ((4, 5, 7), 1, -3, -1, 1),
        ((4, 5), 0, 2, 2, 1),  # an empty slice: all zeros
    ],
)
def test_slice_backward_matches_torch(dtype, sizes, dim, start, end, step):
    view_shape = torch.empty(sizes)[(slice(None),) * (dim % len(sizes)) + (slice(start, end, step),)].shape
    grad = randn(*view_shape).to(dtype)
    want = torch.ops.aten.slice_backward(grad, sizes, dim, start, end, step)
    got = kslice_backward(grad, sizes, dim, start, end, step)
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_slice_backward_through_autograd_with_gems():
    x = randn(6, 10, dtype=torch.float32).requires_grad_()
    w = randn(6, 3)
    with gemsops.use_gems(include=["slice_backward"]):
        (x[:, 2:8:2] * w).sum().backward()
    want = torch.zeros(6, 10, device=x.device)
    want[:, 2:8:2] = w
    torch.testing.assert_close(x.grad, want, rtol=0, atol=0)

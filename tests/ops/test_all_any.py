"""all / any against torch: dims, keepdim, bool/uint8/float inputs (NaN is true), empty, 0-d."""
import pytest
import torch

import gemsops
from gemsops.ops import all_any as A
from tests.util import DEVICE


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32, torch.bfloat16, torch.int32])
def test_all_any(dtype):
    x = (torch.rand(6, 20, device=DEVICE) > 0.1).to(dtype)
    x[2] = 1
    x[3] = 0
    for dims in ([1], [0], [0, 1], None):
        for keepdim in (False, True):
            _same(A.all_dims.__wrapped__(x, dims, keepdim), torch.ops.aten.all.dims(x, dims, keepdim))
            _same(A.any_dims.__wrapped__(x, dims, keepdim), torch.ops.aten.any.dims(x, dims, keepdim))
    _same(A.all_all.__wrapped__(x), torch.all(x))
    _same(A.any_all.__wrapped__(x), torch.any(x))


def test_all_any_edge_cases():
    f = torch.tensor([[0.0, float("nan")], [0.0, 0.0], [-0.0, 1.0]], device=DEVICE)
    _same(A.any_dims.__wrapped__(f, [1]), torch.any(f, 1))
    _same(A.all_dims.__wrapped__(f, [0]), torch.all(f, 0))
    e = torch.zeros(3, 0, dtype=torch.bool, device=DEVICE)
    _same(A.all_dims.__wrapped__(e, [1]), torch.all(e, 1))
    _same(A.any_dims.__wrapped__(e, [1]), torch.any(e, 1))
    _same(A.all_all.__wrapped__(e), torch.all(e))
    s = torch.tensor(2, device=DEVICE)
    _same(A.all_all.__wrapped__(s), torch.all(s))
    _same(A.any_dims.__wrapped__(s, [0], True), torch.any(s, 0, True))
    # dim=[] reduces nothing for all/any (unlike sum)
    x = torch.tensor([[1, 0], [2, 3]], device=DEVICE)
    _same(A.all_dims.__wrapped__(x, []), torch.all(x, dim=[]))
    t = (torch.rand(8, 5, device=DEVICE) > 0.3).t()[:, ::2]
    _same(A.any_dims.__wrapped__(t, [1]), torch.any(t, 1))
    with gemsops.use_gems(include=["all", "any"]):
        got = (torch.all(t, 0), t.any(), torch.all(x, 1, keepdim=True))
    _same(got[0], torch.all(t, 0))
    _same(got[1], t.any())
    _same(got[2], torch.all(x, 1, keepdim=True))

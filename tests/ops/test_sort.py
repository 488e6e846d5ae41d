import sys

import pytest
import torch

import gemsops
import gemsops.ops.sort  # noqa: F401
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn

S = sys.modules["gemsops.ops.sort"]
sort = S.sort
ksort = sort.__wrapped__


def make(shape, dtype, dups=False):
    if dtype == torch.bool:
        return torch.rand(shape, device=DEVICE) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-50 if dtype != torch.uint8 else 0, 50, shape, dtype=dtype, device=DEVICE)
    x = randn(*shape, dtype=dtype)
    return x.round() if dups else x


def check(x, dim, desc, kernel=True):
    v, i = (ksort if kernel else sort)(x, stable=True, dim=dim, descending=desc)
    rv, ri = torch.sort(x, stable=True, dim=dim, descending=desc)
    torch.testing.assert_close(v, rv, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(i, ri)  # stable: indices are unique


# tl.sort is slow under the interpreter (about 1 s per short row): few, short rows there
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("desc", [False, True])
def test_sort_stable(dtype, desc):
    check(make((1, 13), dtype, dups=True), -1, desc)


def test_sort_special_values_and_layouts():
    x = torch.tensor([1.0, float("nan"), -0.0, 0.0, -float("inf"), float("inf"), -1.0, float("nan"), 0.0],
                     device=DEVICE)
    check(x, 0, False)
    check(x.half(), 0, True)
    check(randn(5, 2).round().t(), 1, True)  # non-contiguous rows
    check(make((6, 2, 1), torch.int16, dups=True), 0, False)  # sort along a leading dim
    check(torch.empty(0, 4, device=DEVICE), 1, False)
    check(torch.empty(3, 0, device=DEVICE), 1, False)


def test_sort_native_routes():
    check(torch.randint(0, 9, (2, 7), device=DEVICE), 1, False, kernel=False)  # int64
    check(torch.tensor(3.0, device=DEVICE), 0, False, kernel=False)
    check(randn(2, S.MAX_SORT + 1), 1, True, kernel=False)  # long rows


def test_sort_through_enable(tmp_path):
    log = tmp_path / "log"
    logits = randn(1, 20)
    gemsops.only_enable(include=["sort"], record=True, path=log)
    v, i = torch.sort(logits, descending=True)
    gemsops.disable()
    rv, ri = torch.sort(logits, descending=True)
    torch.testing.assert_close(v, rv, rtol=0, atol=0)
    assert torch.equal(i, ri)
    assert "aten::sort.stable" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32])
@pytest.mark.big_memory
def test_sort_large(dtype):
    for n in (50, 1000, S.MAX_SORT):
        check(make((300, n), dtype, dups=True), -1, True)
        check(make((n, 7), dtype, dups=True), 0, False)

import math

import pytest
import torch

import gemsops
from gemsops.runtime import Unsupported
import sys

import gemsops.ops.full  # noqa: F401  (gemsops.ops.full is the function; the module is in sys.modules)

F = sys.modules["gemsops.ops.full"]
from tests.util import DEVICE, ON_GPU, randn

kfull, kones, kzeros = F.full.__wrapped__, F.ones.__wrapped__, F.zeros.__wrapped__
kfull_like, kones_like, kzeros_like = F.full_like.__wrapped__, F.ones_like.__wrapped__, F.zeros_like.__wrapped__


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
    # bit-exact, NaN and -0.0 included
    if a.dtype.is_floating_point:
        a, b = a.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]), \
            b.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[b.element_size()])
    assert torch.equal(a, b)


VALUES = [0, 1, -7, 0.1, -0.0, 1 / 3, float("inf"), -float("inf"), float("nan"), 65504.0, 3.0e38, 1e-42, True]


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                   torch.int64, torch.int8, torch.uint8, torch.bool])
@pytest.mark.parametrize("value", VALUES)
def test_full_values(dtype, value):
    try:
        ref = torch.full((3, 5), value, dtype=dtype, device=DEVICE)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            F.full((3, 5), value, dtype=dtype, device=DEVICE)
        return
    got = F.full((3, 5), value, dtype=dtype, device=DEVICE)
    same(got, ref)
    try:
        same(kfull((3, 5), value, dtype=dtype, device=DEVICE), ref)
    except Unsupported:  # documented native routes: float values or out-of-range ints for int dtypes
        info = torch.iinfo(dtype)
        assert isinstance(value, float) or not info.min <= value <= info.max


def test_ones_zeros_and_shapes():
    for shape in [(), (0,), (4, 0, 2), (2, 3, 4)]:
        same(kones(shape, device=DEVICE), torch.ones(shape, device=DEVICE))
        same(kzeros(shape, dtype=torch.bfloat16, device=DEVICE), torch.zeros(shape, dtype=torch.bfloat16, device=DEVICE))
        same(kones(shape, dtype=torch.int32, device=DEVICE), torch.ones(shape, dtype=torch.int32, device=DEVICE))


def test_like_variants_preserve_layout():
    x = randn(3, 4, 5).permute(2, 0, 1)
    for fn, ref in [(lambda t, **k: kfull_like(t, -2.5, **k), lambda t, **k: torch.full_like(t, -2.5, **k)),
                    (kones_like, torch.ones_like), (kzeros_like, torch.zeros_like)]:
        for kw in [{}, {"dtype": torch.float16}, {"memory_format": torch.contiguous_format}]:
            a, b = fn(x, **kw), ref(x, **kw)
            same(a, b)
            assert a.stride() == b.stride()
    nd = randn(4, 6)[:, ::2]  # not dense: empty_like gives contiguous
    same(kzeros_like(nd), torch.zeros_like(nd))


def test_factory_native_routes():
    with pytest.raises(RuntimeError):
        F.full((-1, 2), 1.0, device=DEVICE)
    same(F.full((2,), 1 + 2j, device=DEVICE), torch.full((2,), 1 + 2j, device=DEVICE))
    with pytest.raises(RuntimeError):
        F.full((2,), 300, dtype=torch.int8, device=DEVICE)
    if ON_GPU:  # a CPU request on a GPU machine is torch's
        same(F.zeros((2,), device="cpu"), torch.zeros(2))


def test_factories_through_enable(tmp_path):
    log = tmp_path / "log"
    gemsops.only_enable(include=["full", "ones", "zeros"], record=True, path=log)
    a = torch.full((2, 2), -math.inf, device=DEVICE)
    b = torch.ones(3, dtype=torch.int64, device=DEVICE)
    c = torch.zeros_like(a)
    gemsops.disable()
    same(a, torch.full((2, 2), -math.inf, device=DEVICE))
    same(b, torch.ones(3, dtype=torch.int64, device=DEVICE))
    same(c, torch.zeros(2, 2, device=DEVICE))
    text = log.read_text()
    assert "aten::full\t" in text and "aten::ones\t" in text and "aten::zeros_like" in text


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_full_large():
    same(kzeros((8192, 8192), dtype=torch.bfloat16, device=DEVICE), torch.zeros(8192, 8192, dtype=torch.bfloat16, device=DEVICE))


def test_factory_native_routes_under_enable_do_not_recurse():
    gemsops.only_enable(include=["full", "ones", "zeros"])
    try:
        c = torch.full((2,), 1 + 2j, device=DEVICE)
        z = torch.zeros(2, layout=torch.strided, dtype=torch.complex64, device=DEVICE)
        f = torch.full_like(torch.ones(2, dtype=torch.int64, device=DEVICE), 2.5)
    finally:
        gemsops.disable()
    same(c, torch.full((2,), 1 + 2j, device=DEVICE))
    same(z, torch.zeros(2, dtype=torch.complex64, device=DEVICE))
    same(f, torch.full((2,), 2, dtype=torch.int64, device=DEVICE))

"""amax/amin, max/min (dim and full), argmax/argmin against torch: NaN wins, ties -> first index."""
import pytest
import torch

import gemsops
from gemsops.ops import minmax as M
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU

DTYPES = FLOAT_DTYPES + [torch.float64, torch.int32, torch.int8, torch.uint8, torch.int64]
ARG_DTYPES = FLOAT_DTYPES + [torch.int32, torch.uint8]


def _x(shape, dtype, low=-50, high=50):
    if dtype.is_floating_point:
        return torch.randn(shape, device=DEVICE).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, device=DEVICE) > 0.5
    return torch.randint(0 if dtype == torch.uint8 else low, high, shape, device=DEVICE).to(dtype)


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)


SHAPES = [((6, 45), 1), ((45, 6), 0), ((3, 20, 5), 1), ((3, 20, 5), -1), ((50,), 0)]


@pytest.mark.parametrize("dtype", DTYPES + [torch.bool])
@pytest.mark.parametrize("shape,dim", SHAPES[:3])
def test_amax_amin(shape, dim, dtype):
    x = _x(shape, dtype)
    for keepdim in (False, True):
        _same(M.amax.__wrapped__(x, [dim], keepdim), torch.amax(x, dim, keepdim))
        _same(M.amin.__wrapped__(x, [dim], keepdim), torch.amin(x, dim, keepdim))
    _same(M.amax.__wrapped__(x, []), torch.amax(x))
    _same(M.max_all.__wrapped__(x), torch.max(x))
    _same(M.min_all.__wrapped__(x), torch.min(x))


@pytest.mark.parametrize("dtype", ARG_DTYPES)
@pytest.mark.parametrize("shape,dim", SHAPES)
def test_max_min_dim_and_arg(shape, dim, dtype):
    # few distinct values: many ties, whose first index must win
    x = _x(shape, dtype, -3, 3) if not dtype.is_floating_point else torch.randint(-3, 3, shape, device=DEVICE).to(dtype)
    for keepdim in (False, True):
        for fn, ref in ((M.max_dim, torch.max), (M.min_dim, torch.min)):
            v, i = fn.__wrapped__(x, dim, keepdim)
            rv, ri = ref(x, dim, keepdim)
            _same(v, rv)
            _same(i, ri)
        _same(M.argmax.__wrapped__(x, dim, keepdim), torch.argmax(x, dim, keepdim))
        _same(M.argmin.__wrapped__(x, dim, keepdim), torch.argmin(x, dim, keepdim))
    _same(M.argmax.__wrapped__(x), torch.argmax(x))
    _same(M.argmin.__wrapped__(x, None, True), torch.argmin(x, None, True))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_nan_wins(dtype):
    x = torch.randn(5, 30, device=DEVICE).to(dtype)
    x[1, 7] = float("nan")
    x[1, 20] = float("nan")
    x[2, 29] = float("nan")
    x[3, 0] = float("inf")
    x[4, :] = float("-inf")
    for dim in (0, 1):
        _same(M.amax.__wrapped__(x, [dim]), torch.amax(x, dim))
        _same(M.amin.__wrapped__(x, [dim]), torch.amin(x, dim))
        for fn, ref in ((M.max_dim, torch.max), (M.min_dim, torch.min)):
            v, i = fn.__wrapped__(x, dim)
            rv, ri = ref(x, dim)
            _same(v, rv)
            _same(i, ri)
        _same(M.argmax.__wrapped__(x, dim), torch.argmax(x, dim))
        _same(M.argmin.__wrapped__(x, dim), torch.argmin(x, dim))
    _same(M.argmax.__wrapped__(x), torch.argmax(x))
    _same(M.max_all.__wrapped__(x), torch.max(x))


def test_split_paths_keep_first_index_and_nan():
    """Long reductions run in two launches; the second must compare global indices."""
    x = torch.randint(0, 4, (3000,), device=DEVICE).float()
    _same(M.argmax.__wrapped__(x), torch.argmax(x))
    _same(M.argmin.__wrapped__(x), torch.argmin(x))
    x[2500] = float("nan")
    x[2900] = float("nan")
    _same(M.argmax.__wrapped__(x), torch.argmax(x))
    _same(M.max_all.__wrapped__(x), torch.max(x))
    c = torch.randint(0, 4, (700, 8), device=DEVICE).float()
    c[600, 3] = float("nan")
    for fn, ref in ((M.max_dim, torch.max), (M.min_dim, torch.min)):
        v, i = fn.__wrapped__(c, 0)
        rv, ri = ref(c, 0)
        _same(v, rv)
        _same(i, ri)


@pytest.mark.parametrize("shape,dim", [((1, 3000), -1), ((700, 8), 0), ((6, 45), 1), ((3000,), None)])
def test_repeated_signatures_read_their_own_inputs(shape, dim):
    # from the second call of a signature on, an arg-reduction runs its kept plan (a decode
    # step's argmax over the logits): new data, new winners, one or two launches
    import importlib

    reduction = importlib.import_module("gemsops.ops._reduction")
    for step in range(4):
        x = torch.randn(shape, device=DEVICE).to(torch.bfloat16)
        if step == 3:
            x.view(-1)[len(x.view(-1)) // 3] = float("nan")
        _same(M.argmax.__wrapped__(x, dim), torch.argmax(x, dim))
        _same(M.argmin.__wrapped__(x, dim, True), torch.argmin(x, dim, True))
        if dim is not None:
            for got, want in zip(M.max_dim.__wrapped__(x, dim), torch.max(x, dim)):
                _same(got, want)
    assert (x.shape, x.stride(), x.dtype, dim, False, True, False) in reduction._ARG_CALLS


@pytest.mark.parametrize("make", [
    lambda: torch.randn(20, 7, device=DEVICE).t(),
    lambda: torch.randn(4, 5, 6, device=DEVICE).permute(2, 0, 1),
    lambda: torch.randn(6, 40, device=DEVICE)[:, ::3],
    lambda: torch.randn(1, 9, device=DEVICE).expand(5, 9),
])
def test_noncontiguous(make):
    x = make()
    for dim in (0, -1):
        v, i = M.max_dim.__wrapped__(x, dim)
        rv, ri = torch.max(x, dim)
        _same(v, rv)
        _same(i, ri)
        _same(M.amin.__wrapped__(x, [dim]), torch.amin(x, dim))
    # flattened argmax of a permuted tensor counts in logical (row-major) order
    _same(M.argmax.__wrapped__(x), torch.argmax(x))
    _same(M.argmin.__wrapped__(x), torch.argmin(x))


def test_0d_and_empty():
    s = torch.tensor(1.5, device=DEVICE)
    _same(M.amax.__wrapped__(s, [0]), torch.amax(s, 0))
    v, i = M.max_dim.__wrapped__(s, 0, True)
    assert v.item() == 1.5 and i.item() == 0 and i.shape == ()
    _same(M.argmax.__wrapped__(s), torch.argmax(s))
    e = torch.zeros(0, 4, device=DEVICE)
    _same(M.amax.__wrapped__(e, [1]), torch.amax(e, 1))
    v, i = M.max_dim.__wrapped__(e, 1)
    assert v.shape == (0,) and i.shape == (0,)
    with gemsops.use_gems(include=["amax", "max", "argmax", "min"]):
        # empty reduced dims: torch's own errors
        for fn in (lambda: torch.amax(e, 0), lambda: torch.max(e), lambda: torch.max(e, 0),
                   lambda: torch.argmax(e), lambda: torch.min(e)):
            with pytest.raises((RuntimeError, IndexError)):
                fn()
        with pytest.raises(RuntimeError):
            torch.argmax(torch.ones(3, dtype=torch.bool, device=DEVICE))


def test_through_enable(tmp_path):
    log = tmp_path / "ops.txt"
    x = torch.randn(6, 10, device=DEVICE)
    gemsops.enable(record=True, path=log)
    try:
        got = (x.max(1), x.argmax(), x.amax(0), x.min(), torch.argmin(x, 1, keepdim=True))
    finally:
        gemsops.disable()
    text = log.read_text()
    for op in ("aten::max.dim", "aten::argmax", "aten::amax", "aten::min\t", "aten::argmin"):
        assert op in text
    _same(got[0].values, x.max(1).values)
    _same(got[0].indices, x.max(1).indices)
    _same(got[1], x.argmax())
    _same(got[2], x.amax(0))
    _same(got[3], x.min())
    _same(got[4], torch.argmin(x, 1, keepdim=True))


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.parametrize("shape,dim", [((4096, 32000), 1), ((8192, 4096), 0), ((1 << 24,), 0), ((7, 1 << 20), 1)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.big_memory
def test_large(shape, dim, dtype):
    x = torch.randn(shape, device=DEVICE).to(dtype)
    v, i = M.max_dim.__wrapped__(x, dim)
    rv, ri = torch.max(x, dim)
    _same(v, rv)
    _same(i, ri)
    _same(M.argmax.__wrapped__(x), torch.argmax(x))
    _same(M.amin.__wrapped__(x, [dim]), torch.amin(x, dim))

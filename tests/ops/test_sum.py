"""sum (and the reduction skeleton's layouts: rows, columns, copies, splits) against torch."""
import pytest
import torch

import gemsops
from gemsops.ops import _reduction as R
from gemsops.ops import sum as S
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, reference

# (shape, dims, keepdim): rows, columns, middle dims, several dims, everything
CASES = [
    ((7, 33), [1], False),
    ((7, 33), [0], True),
    ((3, 10, 4), [1], False),
    ((3, 10, 4), [0, 2], True),
    ((2, 3, 4, 5), [1, 3], False),
    ((5, 6), None, False),
    ((5, 6), [], True),
    ((5, 6), [-1, -2], False),
]


def _x(shape, dtype):
    if dtype.is_floating_point:
        return torch.randn(shape, device=DEVICE).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape, device=DEVICE) > 0.5
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, device=DEVICE).to(dtype)


def _dims(shape, dims):
    return list(range(len(shape))) if not dims else dims


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,dims,keepdim", CASES)
def test_sum_float(shape, dims, keepdim, dtype):
    x = _x(shape, dtype)
    got = S.sum_dim.__wrapped__(x, dims, keepdim)  # __wrapped__: the kernel must handle it itself
    ref = reference(torch.sum, x, _dims(shape, dims), keepdim, out_dtype=dtype)
    assert got.dtype == dtype and got.shape == ref.shape
    assert_close(got, ref, dtype, scale=2)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.int64, torch.bool])
def test_sum_integers_promote_to_int64(dtype):
    x = _x((6, 40), dtype)
    for dims in ([1], [0], None):
        got = S.sum_dim.__wrapped__(x, dims)
        ref = torch.sum(x, dims if dims else list(range(2)))
        assert got.dtype == torch.int64
        torch.testing.assert_close(got, ref, atol=0, rtol=0)
    assert S.sum_all.__wrapped__(x).item() == torch.sum(x).item()


def test_sum_int64_wraps_like_torch():
    x = torch.full((4,), 2**62, dtype=torch.int64, device=DEVICE)
    assert S.sum_all.__wrapped__(x).item() == torch.sum(x).item()


@pytest.mark.parametrize("src,dst", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                     (torch.float32, torch.float16), (torch.int32, torch.float32),
                                     (torch.float32, torch.float64)])
def test_sum_dtype_argument(src, dst):
    x = _x((5, 70), src)
    got = S.sum_dim.__wrapped__(x, [1], dtype=dst)
    ref = torch.sum(x.cpu(), [1], dtype=dst).to(DEVICE) if src != torch.float32 or dst != torch.float16 \
        else reference(torch.sum, x.to(dst), [1], out_dtype=dst)
    assert got.dtype == dst
    assert_close(got, ref, dst, scale=2)


@pytest.mark.parametrize("make", [
    lambda: torch.randn(33, 7, device=DEVICE).t(),                       # column-major: column kernel
    lambda: torch.randn(6, 40, device=DEVICE)[:, ::3],                    # strided rows
    lambda: torch.randn(4, 5, 6, device=DEVICE).permute(2, 0, 1),         # permuted
    lambda: torch.randn(1, 9, device=DEVICE).expand(5, 9),                # stride 0
    lambda: torch.randn(4, 6, 8, device=DEVICE)[:, 1:5, ::2],             # sliced 3-D: kept dims do not merge
])
@pytest.mark.parametrize("dim", [0, -1, None])
def test_sum_noncontiguous(make, dim):
    x = make()
    dims = None if dim is None else [dim]
    got = S.sum_dim.__wrapped__(x, dims)
    assert_close(got, reference(torch.sum, x, dims if dims else list(range(x.dim())), out_dtype=x.dtype))


def test_sum_multi_dims_noncontiguous_needs_copy():
    x = torch.randn(4, 5, 6, 3, device=DEVICE).permute(1, 3, 0, 2)
    got = S.sum_dim.__wrapped__(x, [0, 3], True)
    assert_close(got, reference(torch.sum, x, [0, 3], True, out_dtype=x.dtype))


def test_sum_nan_inf():
    x = torch.randn(4, 9, device=DEVICE)
    x[1, 2] = float("nan")
    x[2, 3] = float("inf")
    x[3, 0], x[3, 1] = float("inf"), float("-inf")
    got = S.sum_dim.__wrapped__(x, [1])
    torch.testing.assert_close(got, torch.sum(x, 1), equal_nan=True)


def test_sum_empty_and_0d():
    z = torch.zeros(3, 0, device=DEVICE)
    torch.testing.assert_close(S.sum_dim.__wrapped__(z, [1]), torch.zeros(3, device=DEVICE))
    assert S.sum_dim.__wrapped__(z, [0]).shape == (0,)
    assert S.sum_all.__wrapped__(z).item() == 0
    s = torch.tensor(2.5, device=DEVICE)
    for dims in ([0], [-1], None, []):
        got = S.sum_dim.__wrapped__(s, dims, True)
        assert got.shape == () and got.item() == 2.5
    assert S.sum_all.__wrapped__(s).item() == 2.5


def test_sum_out_variants():
    x = torch.randn(5, 8, device=DEVICE)
    out = torch.empty(5, device=DEVICE)
    r = S.sum_dim_out.__wrapped__(x, [1], out=out)
    assert r is out
    assert_close(out, torch.sum(x, 1))
    out0 = torch.empty((), device=DEVICE)
    S.sum_all_out.__wrapped__(x, out=out0)
    assert_close(out0, torch.sum(x), scale=2)
    # a wrong-shaped out is resized by torch: routed to native, same answer
    bad = torch.empty(0, device=DEVICE)
    with gemsops.use_gems(include=["sum"]):
        torch.sum(x, 1, out=bad)
    assert_close(bad, torch.sum(x, 1))


def _splits_under_every_config(x, dims):
    """Whether reducing ``x`` over ``dims`` takes the two-launch path whichever config is tuned."""
    g = R.plan(x, R.normalize_dims(x.dim(), dims), False)
    tuner = R._row_tuner if g.rows else R._col_tuner
    return all(R._layout(cfg, g)[3] > 1 for cfg in [tuner.default, *tuner.candidates])


def test_sum_split_paths():
    """Few outputs and long reductions split the reduced dim (two launches) on rows and columns."""
    # On a GPU a split keeps >= 16K elements per program (smaller pieces cost more launch and
    # combine than they gain), so only long reductions split; the interpreter splits small
    # ones so that CI runs the two-stage path on small tensors.
    n, rows = (1 << 20, 1 << 16) if ON_GPU else (3000, 1100)
    x = torch.randn(n, device=DEVICE)
    assert _splits_under_every_config(x, None)
    assert_close(S.sum_all.__wrapped__(x), reference(torch.sum, x, out_dtype=x.dtype), scale=10)
    c = torch.randn(rows, 8, device=DEVICE)
    assert _splits_under_every_config(c, [0])
    assert_close(S.sum_dim.__wrapped__(c, [0]), reference(torch.sum, c, [0], out_dtype=c.dtype), scale=10)
    i = torch.randint(-9, 9, (n,), device=DEVICE, dtype=torch.int32)
    assert _splits_under_every_config(i, None)
    assert S.sum_all.__wrapped__(i).item() == i.sum().item()


def test_uncompilable_config_runs_native(monkeypatch):
    # a Triton release that rejects every candidate (the tuner raises) must give torch's answer
    def no_config(key, run, cold=False):
        raise RuntimeError("gemsops: no candidate config of reduce_rows ran")

    monkeypatch.setattr(R._row_tuner, "choose", no_config)
    monkeypatch.setattr(R, "_UNCOMPILABLE", set())
    x = torch.randn(4, 30, device=DEVICE)
    assert torch.equal(S.sum_dim(x, [1]), torch.sum(x, 1))
    assert R._UNCOMPILABLE


def test_inputs_larger_than_l2_are_tuned_with_l2_cleared(monkeypatch):
    # a model's earlier kernels leave other data in L2, so a reduction over an input that
    # cannot fit there is tuned cold; a smaller one keeps the warm pick
    asked = []
    choose = R._row_tuner.choose
    monkeypatch.setattr(R._row_tuner, "choose", lambda key, run, cold=False: asked.append(cold) or choose(key, run, cold))
    monkeypatch.setattr(R, "_CALLS", type(R._CALLS)())
    l2 = R.l2_bytes(torch.device(DEVICE), 1 << 16)
    small = torch.randn(4, 64, device=DEVICE)
    big = torch.randn(l2 // (4 * 512) + 1, 512, device=DEVICE)
    for x in (small, big):
        assert_close(S.sum_dim.__wrapped__(x, [1]), reference(torch.sum, x, [1], out_dtype=x.dtype), scale=10)
    assert asked == [False, True]


def test_sum_routed_to_native():
    x = torch.randn(4, 5, device=DEVICE)
    with gemsops.use_gems(include=["sum"]):
        with pytest.raises(IndexError):
            torch.sum(x, 5)
        with pytest.raises(RuntimeError):
            torch.sum(x, [1, 1])
        c = torch.sum(torch.randn(3, 4, dtype=torch.complex64, device=DEVICE), 1)
    assert c.dtype == torch.complex64


def test_sum_through_enable(tmp_path):
    log = tmp_path / "ops.txt"
    x = torch.randn(6, 10, device=DEVICE)
    gemsops.enable(record=True, path=log)
    try:
        got = (torch.sum(x, 1), x.sum(), torch.sum(x, dim=(0, 1), keepdim=True))
    finally:
        gemsops.disable()
    text = log.read_text()
    assert "aten::sum.dim_IntList" in text and "aten::sum\t" in text
    assert_close(got[0], torch.sum(x, 1))
    assert_close(got[1], torch.sum(x), scale=2)
    assert got[2].shape == (1, 1)


def test_repeated_signatures_read_their_own_inputs_and_never_share_a_plan():
    # from its second call on, a reduction signature takes a planned launch: each call must
    # read its own input, and calls differing in dims, keepdim, op, ord or layout must not
    # meet each other's plans
    calls = [
        lambda x: torch.sum(x, 1), lambda x: torch.sum(x, 0), lambda x: torch.sum(x, [1], keepdim=True),
        lambda x: torch.sum(x, 1, dtype=torch.float16), lambda x: torch.mean(x, 1), lambda x: torch.amax(x, 1),
        lambda x: torch.linalg.vector_norm(x, 2, 1), lambda x: torch.linalg.vector_norm(x, 3, 1),
        lambda x: x.sum(),
    ]
    layouts = [lambda: torch.randn(6, 40, device=DEVICE)[:, 3:35],  # sliced rows
               lambda: torch.randn(32, 6, device=DEVICE).t(),  # columns
               lambda: torch.randn(6, 32, device=DEVICE)]
    for _ in range(3):
        for make in layouts:
            x = make()
            for fn in calls:
                with gemsops.use_gems(include=["sum", "mean", "amax", "linalg_vector_norm"]):
                    got = fn(x)
                want = fn(x)
                assert got.shape == want.shape and got.dtype == want.dtype
                assert_close(got, want, want.dtype, scale=2)


@pytest.mark.skipif(not ON_GPU, reason="large shapes on the GPU only")
@pytest.mark.parametrize("shape,dim", [((16384, 8192), 1), ((8192, 4096), 0), ((1 << 24,), 0), ((32, 4096), 1),
                                       ((4, 1 << 20), 1), ((1 << 20, 4), 0), ((64, 512, 512), 1)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.big_memory
def test_sum_large(shape, dim, dtype):
    x = torch.randn(shape, device=DEVICE).to(dtype)
    got = S.sum_dim.__wrapped__(x, [dim])
    ref = reference(torch.sum, x, [dim], out_dtype=dtype)
    scale = (shape[dim] ** 0.5) / 4
    assert_close(got, ref, dtype, scale=max(scale, 1))


def test_every_row_config_reduces_alike(monkeypatch):
    # whichever reduce_rows config a GPU's tuner picks (evict_first loads, several rows per
    # program, masked row tails) gives the same sums, means and maxima; on CPU the
    # interpreter runs small stand-ins of those shapes of config
    configs = list(R._row_tuner.candidates) if ON_GPU else [
        {"BLOCK_N": 64, "TILE": 64, "num_warps": 4},
        {"BLOCK_N": 64, "TILE": 64, "num_warps": 4, "EVICT": 1},
        {"BLOCK_N": 128, "TILE": 256, "num_warps": 4, "EVICT": 1},
    ]
    torch.manual_seed(3)
    x = _x((37, 300), torch.bfloat16)
    x[5, 7] = float("nan")
    for cfg in configs:
        monkeypatch.setattr(R._row_tuner, "choose", lambda key, run, cold=False, cfg=cfg: cfg)
        monkeypatch.setattr(R, "_CALLS", type(R._CALLS)())  # no plan made under another config
        with gemsops.use_gems(include=["sum", "mean", "amax"]):
            got = (torch.sum(x, 1), torch.mean(x, 1), torch.amax(x, 1))
        for g, fn in zip(got, (torch.sum, torch.mean, torch.amax)):
            assert_close(g, reference(fn, x, 1, out_dtype=x.dtype), torch.bfloat16, scale=4, equal_nan=True,
                         msg=lambda m, cfg=cfg: f"{cfg}: {m}")

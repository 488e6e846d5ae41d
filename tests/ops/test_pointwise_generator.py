"""The pointwise generator: layouts, promotion, out=/in-place, fallbacks, int64 indexing."""
import pytest
import torch

import gemsops
from gemsops.ops import _pointwise
from gemsops.runtime import launch
from gemsops.ops._common import needs_int64
from tests.ops._pointwise_check import check, make, run_gems
from tests.util import DEVICE, ON_GPU, assert_close


def _layouts():
    """(name, a, b) pairs covering the layouts TensorIterator meets."""
    base = make(4, 6)
    return [
        ("contiguous", make(3, 5), make(3, 5)),
        ("broadcast_row", make(3, 5), make(5)),
        ("broadcast_both", make(3, 1), make(1, 5)),
        ("transposed", make(5, 3).t(), make(5, 3).t()),
        ("mixed_strides", make(5, 3).t(), make(3, 10)[:, ::2]),
        ("expanded", make(1, 5).expand(3, 5), make(3, 5)),
        ("sliced_3d", make(2, 3, 8)[:, 1:, ::3], make(2, 2, 3)),
        ("zero_d_and_tensor", torch.tensor(1.5, device=DEVICE), make(3, 5)),
        ("zero_d", torch.tensor(2.0, device=DEVICE), torch.tensor(-3.0, device=DEVICE)),
        ("empty", make(0, 5), make(5)),
        ("one_element", make(1, 1), make(3, 1)),
        ("rank6_merged", make(2, 3, 2, 2, 3, 2), make(2, 2, 3, 2)),
        ("permuted_dense", base.t(), base.t()),
    ]


@pytest.mark.parametrize("case", _layouts(), ids=lambda c: c[0])
def test_layouts(case):
    _, a, b = case
    check("mul", torch.mul, a, b)


@pytest.mark.parametrize("index", range(len(_layouts())), ids=[c[0] for c in _layouts()])
def test_repeated_layouts_use_new_data_and_scalars(index):
    # a layout seen before takes a planned launch: it must read the new operands and values
    for scale in (1, 3, 0.5):
        _, a, b = _layouts()[index]  # fresh random tensors, same shapes and strides
        check("mul", torch.mul, a, b)
        check("add", lambda x, y, s=scale: torch.add(x, y, alpha=s), a, b)
        check("mul", lambda x, s=scale: torch.mul(x, s), a)


def test_repeated_strided_layouts_take_their_plan_first_and_read_new_operands():
    # from the third call of a broadcast or sliced signature on (dtypes, shapes, strides),
    # mul goes straight to its layout plan (Pointwise._strided): each call must read its own
    # operands, and the same shapes with other strides or dtypes must not take that plan
    import importlib

    mul_op = importlib.import_module("gemsops.ops.mul")._mul_op
    q = lambda: make(2, 4, 1, 8)  # noqa: E731  (rotary's q * cos)
    cos = lambda dtype=torch.float32: make(1, 1, 1, 8, dtype=dtype)  # noqa: E731
    half = lambda: make(2, 4, 1, 16)[..., 8:]  # noqa: E731  (a rotate_half slice)
    for _ in range(4):
        for fn, args in ((torch.mul, (q(), cos())), (torch.mul, (half(), cos())), (torch.mul, (half(), 2.5)),
                         (torch.mul, (q(), cos(torch.bfloat16))), (torch.neg, (half(),)),
                         (torch.mul, (make(2, 4, 1, 16)[..., ::2], cos()))):
            with gemsops.use_gems(include=["mul", "neg"]):
                got = fn(*args)
            want = fn(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
            assert got.dtype == fn(*args).dtype and got.shape == want.shape
            assert_close(got, want.to(got.dtype))
    keys = set(mul_op._strided)
    assert (torch.float32, torch.float32, (2, 4, 1, 8), (32, 8, 8, 1), (1, 1, 1, 8), (8, 8, 8, 1)) in keys
    assert (torch.float32, float, (2, 4, 1, 8), (64, 16, 16, 1)) in keys


def test_repeated_casting_stores_follow_the_output_dtype():
    # copy_ into outputs of one layout and different dtypes: the plans are keyed by the
    # source's dtype, so a planned launch must not reuse a kernel built for another out dtype
    for _ in range(2):
        for dst_dtype in (torch.float16, torch.float32, torch.int32, torch.bfloat16):
            src = make(6, 4).t()[:, 1:]  # strided: the layout-plan path, not the flat one
            dst = torch.zeros(5, 4, dtype=dst_dtype, device=DEVICE).t()
            got, _ = run_gems("copy_", lambda d, s: d.copy_(s), dst.clone(), src)
            assert got.dtype == dst_dtype
            assert torch.equal(got, dst.clone().copy_(src))


@pytest.mark.parametrize("dtypes", [
    (torch.float16, torch.float32), (torch.int32, torch.float16), (torch.bool, torch.bool),
    (torch.bfloat16, torch.bfloat16), (torch.int8, torch.uint8),
])
def test_repeated_same_shape_calls_promote_as_torch(dtypes):
    # from the second call of a dtype signature on, one or two contiguous tensors of one
    # shape take the lean path (Pointwise._lean): result dtype, values and empty or 0-d
    # tensors as torch, whatever shape came first
    for shape in [(3, 5), (3, 5), (), (), (1,), (0, 4), (7,)]:
        a, b = (make(*(shape or (1,)), dtype=d).reshape(shape) for d in dtypes)
        check("add", torch.add, a, b)
        check("mul", torch.mul, b, a)
        check("exp", torch.exp, a.float() if a.dtype == torch.bool else a)
        check("mul", lambda x: x * 1.5, a)
        check("mul", lambda x: x * 1.5, a)
        if torch.promote_types(*dtypes) == dtypes[0] and a.numel():  # in place keeps a's dtype
            check("add", lambda x, y: x.add_(y), a, b)
            check("add", lambda x, y: x.add_(y), a, b)
            check("mul", lambda x: x.mul_(x), a)


def test_repeated_in_place_calls_with_overlapping_operands_follow_torch():
    # the lean in-place path takes an operand that is the output itself, never one that
    # overlaps it in part: torch raises for that
    base = make(10)
    for _ in range(2):
        check("add", torch.add, make(9), make(9))  # the functional call fills the lean path
        check("add", lambda x, y: x.add_(y), make(9), make(9))
        with pytest.raises(RuntimeError, match="single memory location"):
            run_gems("add", lambda: base[1:].add_(base[:-1]))
        with pytest.raises(RuntimeError, match="single memory location"):
            run_gems("add", lambda: base[:-1].add_(base[1:]))


def test_result_keeps_input_layout():
    a = make(4, 6).t()
    got, _ = run_gems("mul", torch.mul, a, a)
    assert got.stride() == a.stride()


@pytest.mark.parametrize("dtypes", [
    (torch.float16, torch.float32), (torch.bfloat16, torch.float16), (torch.int32, torch.float16),
    (torch.int8, torch.int64), (torch.uint8, torch.int8), (torch.bool, torch.int32), (torch.float64, torch.float32),
])
def test_type_promotion_tensor_tensor(dtypes):
    check("mul", torch.mul, make(3, 4, dtype=dtypes[0]), make(4, dtype=dtypes[1]))


@pytest.mark.parametrize("dtype,scalar", [
    (torch.float16, 2.5), (torch.bfloat16, 3), (torch.int32, 2.5), (torch.int16, 7), (torch.uint8, 300),
    (torch.bool, 2), (torch.float64, 0.1), (torch.int64, 2**40),
])
def test_type_promotion_python_scalars(dtype, scalar):
    check("mul", torch.mul, make(3, 4, dtype=dtype), scalar)


def test_zero_d_tensor_is_weak_against_dimensioned():
    # a 0-d float64 tensor does not promote an fp16 tensor; an int tensor does meet a float 0-d
    check("mul", torch.mul, make(3, dtype=torch.float16), torch.tensor(1.25, dtype=torch.float64, device=DEVICE))
    check("mul", torch.mul, make(3, dtype=torch.int32), torch.tensor(1.25, dtype=torch.float64, device=DEVICE))


def test_float64_scalar_keeps_full_precision():
    x = torch.zeros(3, dtype=torch.float64, device=DEVICE)
    got = check("add", torch.add, x, 0.1, exact=True)
    assert got[0].item() == 0.1


def test_out_of_another_dtype_rounds_to_the_result_dtype_first():
    a, b = make(6, dtype=torch.float16), make(6, dtype=torch.float16)
    out = torch.empty(6, dtype=torch.float64, device=DEVICE)
    got, logged = run_gems("add", torch.add, a, b, out=out)
    assert logged == ["add.out"] and got is out
    assert torch.equal(out, (a + b).double())


def test_out_and_in_place():
    a, b = make(3, 5), make(5)
    out = torch.empty(5, 3, device=DEVICE).t()  # non-contiguous out
    check("mul", lambda x, y: torch.mul(x, y, out=out.clone().t().t()), a, b)
    check("mul", lambda x, y: x.mul_(y), a, b)
    check("mul", lambda x, y: x.t().mul_(y.t()), make(4, 3), make(4, 3))


def test_in_place_aliasing_input_is_allowed():
    a = make(4, 4)
    check("mul", lambda x: x.mul_(x), a)


def test_cases_torch_decides_go_native():
    a = make(3, 5)
    # out of the wrong shape: torch resizes (with a warning)
    with pytest.warns(UserWarning):
        check("mul", lambda x: torch.mul(x, 2.0, out=torch.empty(2, device=DEVICE)), a, served=False)
    # partial overlap of out with an input
    base = make(10)
    with pytest.raises(RuntimeError, match="single memory location"):
        run_gems("mul", lambda: torch.mul(base[:-1], 2.0, out=base[1:]))
    # result dtype that cannot be cast to out: torch's error
    with pytest.raises(RuntimeError, match="can't be cast"):
        run_gems("mul", lambda: make(3, dtype=torch.int32).mul_(1.5))
    # complex: not a kernel dtype
    c = torch.randn(3, dtype=torch.complex64, device=DEVICE)
    check("mul", torch.mul, c, c, served=False)
    check("mul", torch.mul, c, 2, served=False)


def test_rank_beyond_five_after_merging_goes_native():
    a = make(2, 3, 2, 3, 2, 3)
    b = a.permute(5, 4, 3, 2, 1, 0).contiguous().permute(5, 4, 3, 2, 1, 0)  # same shape, reversed strides
    check("mul", torch.mul, a[:, :, :, :, :, ::2], b[:, :, :, :, :, ::2], served=False)


def test_merged_dims_stay_in_kernel():
    a = make(2, 3, 2, 3, 2, 3)
    check("mul", torch.mul, a, make(3))  # contiguous dims merge: one launch through gems


def test_int64_indexing_decision_without_allocating():
    huge = torch.empty(1, device=DEVICE).expand(2**31 + 7)
    small = torch.empty(4, device=DEVICE).expand(3, 4)
    assert needs_int64(huge) and not needs_int64(small)
    meta = torch.empty(2**16, 2**16 + 1, device="meta")[:, :8]  # 2**19 elements, offsets past 2**31
    small_meta = torch.empty(8, 8, device="meta")
    assert _pointwise.needs_int64(meta, ()) and _pointwise.needs_int64(small_meta, (meta,))
    assert not _pointwise.needs_int64(small_meta, (small_meta, 2.0))


def test_launch_paths_and_index_width(monkeypatch):
    seen = []
    names = {id(_pointwise._pointwise_flat_kernel): "flat", id(_pointwise._pointwise_strided_kernel): "strided"}

    def record(bound, grid, *args):  # every launch passes here; this one launches nothing
        c = bound.constexprs
        seen.append((names.get(id(bound.launcher.kernel)), c["INT64"], c.get("RANK")))

    monkeypatch.setattr(launch.Bound, "__call__", record)
    # a prepared launch that an earlier test compiled would call the kernel without its Bound
    through_bound = lambda prepared, *head: prepared.bound(prepared.grid, *head, *prepared.tail)  # noqa: E731
    monkeypatch.setattr(launch.Prepared, "__call__", through_bound)
    monkeypatch.setattr(launch.Prepared, "planned", through_bound)
    gemsops.ops.mul(make(3, 5), make(3, 5))
    gemsops.ops.mul(make(5, 3).t(), make(5, 3).t())
    gemsops.ops.mul(make(3, 5), make(5))
    assert seen == [("flat", False, None), ("flat", False, None), ("strided", False, 2)]


@pytest.mark.skipif(not ON_GPU, reason="needs a GPU with a few GiB free")
@pytest.mark.big_memory
def test_past_int32_elements_on_gpu():
    n = 2**31 + 1024
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * n:
        pytest.skip("not enough GPU memory")
    x = torch.ones(n, dtype=torch.int8, device=DEVICE)
    x[-6:] = 3  # even offsets n-6, n-4, n-2 are the last three of x[::2]
    y = gemsops.ops.add(x, 1)
    assert y[-5:].tolist() == [4] * 5 and y[:3].tolist() == [2] * 3 and y[2**31 - 2: 2**31 + 2].tolist() == [2] * 4
    del y
    z = gemsops.ops.mul(x[::2], 2)  # strided path, offsets past 2**31
    assert z[-3:].tolist() == [6, 6, 6] and z[0].item() == 2


def test_enable_routes_every_pointwise_family():
    gemsops.enable()
    active = set(gemsops.all_registered_ops())
    for overload in ["sub.Tensor", "mul.Scalar", "div.Tensor_mode", "pow.Tensor_Scalar", "exp", "gelu", "silu_backward",
                     "eq.Scalar", "logical_not", "bitwise_and.Tensor", "where.self", "clamp", "masked_fill.Scalar",
                     "fill_.Scalar", "zero_", "copy_", "_to_copy", "lerp.Scalar", "addcmul", "addcdiv_",
                     "threshold_backward", "tanh_backward", "sigmoid", "rsqrt", "neg_"]:
        assert overload in active, overload
    a, b = make(3, 4), make(4)
    assert_close(torch.sub(a, b, alpha=2), a - 2 * b)

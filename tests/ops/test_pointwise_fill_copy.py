"""fill_/zero_/masked_fill, copy_ (casts, strides, broadcast) and _to_copy."""
import pytest
import torch

from tests.ops._pointwise_check import check, make, run_gems
from tests.util import DEVICE, ON_GPU

ALL = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8,
       torch.uint8, torch.bool]


def test_fill_values_torch_refuses_and_bool_bytes():
    # out of the target's range torch raises rather than wrap or saturate; gems must too
    for dtype, value in [(torch.int8, 300), (torch.int8, 127.9), (torch.uint8, -0.5), (torch.uint8, 256),
                         (torch.int32, 2**31), (torch.int64, float("nan")), (torch.float16, 70000.0),
                         (torch.float32, 1e300), (torch.bfloat16, -1e300)]:
        for fn in (lambda: torch.zeros(3, dtype=dtype, device=DEVICE).fill_(value),
                   lambda: torch.zeros(3, dtype=dtype, device=DEVICE).masked_fill(
                       torch.tensor([True, False, True], device=DEVICE), value)):
            with pytest.raises(RuntimeError):
                fn()
            with pytest.raises(RuntimeError):
                run_gems(["fill_", "masked_fill"], fn)
    for value in (-255, -3, 255):  # integers wrap into uint8 from -255 up, as torch allows
        check("fill_", lambda t: t.fill_(value), make(4, dtype=torch.uint8), exact=True)
        check("masked_fill", lambda t, m: t.masked_fill(m, value), make(4, dtype=torch.uint8),
              make(4, dtype=torch.bool), exact=True)
    # masked_fill reads a tensor value as a Scalar (checked), fill_ copies it (unchecked)
    big = torch.tensor(300, device=DEVICE)
    with pytest.raises(RuntimeError):
        run_gems("masked_fill", torch.masked_fill, make(4, dtype=torch.int8), make(4, dtype=torch.bool), big)
    check("masked_fill", torch.masked_fill, make(4, dtype=torch.int8), make(4, dtype=torch.bool),
          torch.tensor(-7.9, device=DEVICE))
    check("fill_", lambda t: t.fill_(big), make(4, dtype=torch.int8), exact=True)
    check("fill_", lambda t: t.fill_(torch.tensor(-1.5, device=DEVICE)), make(4, dtype=torch.uint8), exact=True)
    check("fill_", lambda t: t.fill_(torch.tensor(7, device="cpu")), make(4, dtype=torch.int8), exact=True)
    # stores into bool tensors are the bytes 0 and 1, whatever was converted
    for src in (torch.tensor([0.5, -0.25, 0.0, float("nan"), 2.0], device=DEVICE),
                torch.tensor([256, 2, 0, -1, 512], dtype=torch.int32, device=DEVICE)):
        got = check("copy_", lambda d, t: d.copy_(t), torch.empty(5, dtype=torch.bool, device=DEVICE), src,
                    exact=True)
        assert got.view(torch.uint8).tolist() == (src != 0).view(torch.uint8).tolist()


@pytest.mark.parametrize("dtype", ALL)
def test_fill_and_zero(dtype):
    x = make(3, 4, dtype=dtype)
    for value in (2, -3, 2.75, True, 0.1):
        if dtype == torch.uint8 and value == -3:
            continue
        check("fill_", lambda t: t.fill_(value), x, exact=True)
        check("fill_", lambda t: t.t().fill_(value), x, exact=True)
    check("fill_", lambda t: t.fill_(torch.tensor(5, device=DEVICE)), x, exact=True)
    check("zero_", lambda t: t[:, ::2].zero_(), x, exact=True)
    check("fill_", lambda t: torch.ops.aten.fill.Scalar(t, 1.5), x, exact=True)


def test_fill_float64_and_int64_exact():
    got, _ = run_gems("fill_", lambda: torch.empty(3, dtype=torch.float64, device=DEVICE).fill_(0.1))
    assert got[0].item() == 0.1
    got, _ = run_gems("fill_", lambda: torch.empty(3, dtype=torch.int64, device=DEVICE).fill_(2**40 + 1))
    assert got[2].item() == 2**40 + 1
    got, _ = run_gems("fill_", lambda: torch.empty(3, dtype=torch.int64, device=DEVICE).fill_(-7.9))
    assert got.tolist() == [-7, -7, -7]


def test_fill_with_aliasing_value_goes_native():
    x = make(6)
    check("fill_", lambda t: t.fill_(t[2]), x, served=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32, torch.bool])
def test_masked_fill(dtype):
    x = make(3, 5, dtype=dtype)
    mask = make(3, 5, dtype=torch.bool)
    check("masked_fill", torch.masked_fill, x, mask, 2.5 if dtype.is_floating_point else 3)
    check("masked_fill", torch.masked_fill, x, mask[0], float("-inf") if dtype.is_floating_point else -1)
    check("masked_fill", torch.masked_fill, x.t(), mask.t(), torch.tensor(1.0, device=DEVICE))
    check("masked_fill", lambda t, m: t.masked_fill_(m, 0), x, mask)
    check("masked_fill", torch.masked_fill, make(5, dtype=dtype), mask, 1)  # self broadcast to the mask


def test_masked_fill_bad_mask_is_torchs_error():
    with pytest.raises(RuntimeError):
        run_gems("masked_fill", torch.masked_fill, make(3), make(3, dtype=torch.int32), 1.0)


@pytest.mark.parametrize("src_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32,
                                       torch.bool])
def test_copy_casts(src_dtype):
    src = make(3, 6, dtype=src_dtype, specials=src_dtype == torch.float32)
    if src_dtype == torch.float32:
        src = torch.where(src.isfinite(), src * 50, src)
    for dst_dtype in ALL:
        if src_dtype == torch.float32 and not (dst_dtype.is_floating_point or dst_dtype == torch.bool):
            # float -> int out of the target's range (NaN, inf, 150 -> int8) is undefined in C and
            # torch; negatives into uint8 are not: torch converts through int64, -7.5 gives 249
            s = src.nan_to_num(0.0, 100.0, -100.0).clamp(-100, 100)
        else:
            s = src
        dst = torch.empty(3, 6, dtype=dst_dtype, device=DEVICE)
        check("copy_", lambda d, t: d.copy_(t), dst, s, exact=True)


def test_copy_layouts():
    check("copy_", lambda d, s: d.copy_(s), torch.empty(6, 4, device=DEVICE).t(), make(4, 6))
    check("copy_", lambda d, s: d.copy_(s), torch.empty(4, 6, device=DEVICE)[:, ::2], make(4, 3).t().t())
    check("copy_", lambda d, s: d.copy_(s), torch.empty(4, 6, device=DEVICE), make(6))  # broadcast src
    check("copy_", lambda d, s: d.copy_(s), torch.empty(4, 6, device=DEVICE), torch.tensor(3.0, device=DEVICE))
    check("copy_", lambda d, s: d.copy_(s), torch.empty(0, 6, device=DEVICE), make(0, 6))
    with pytest.raises(RuntimeError, match="single memory location"):  # overlap: torch's error
        run_gems("copy_", lambda d: d[1:].copy_(d[:-1]), make(8))
    got, _ = run_gems("copy_", lambda: make(4, 6).clone())
    assert got.shape == (4, 6)


def test_to_copy():
    x = make(4, 6, specials=True)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        got = check("_to_copy", lambda t: t.to(dtype), x, exact=True)  # bf16 rounds to nearest even here too
        assert got.dtype == dtype
    got = check("_to_copy", lambda t: t.t().to(torch.float16), x)
    assert got.stride() == x.t().stride()  # preserve_format keeps a dense layout
    check("_to_copy", lambda t: t[:, ::2].to(torch.float64), x)
    check("_to_copy", lambda t: t.to(torch.float16, memory_format=torch.contiguous_format), x.t())
    check("_to_copy", lambda t: t.to(device=DEVICE, dtype=torch.int32, copy=True), x.nan_to_num(0.0, 9.0, -9.0))
    check("_to_copy", lambda t: t.to("meta"), x, served=False)
    c4 = make(2, 3, 4, 5).to(memory_format=torch.channels_last)
    check("_to_copy", lambda t: t.to(torch.float16), c4)
    check("_to_copy", lambda t: t.to(torch.float16, memory_format=torch.channels_last), make(2, 3, 4, 5),
          served=False)


def test_repeated_in_place_and_out_calls_are_planned_but_overlap_is_still_torchs():
    # the second call of an in-place / out= layout takes a planned launch: each call must use
    # its own tensors and values, and an input that overlaps out (same layouts, other data
    # pointers) must still reach torch's overlap error rather than the plan
    for _ in range(3):
        for value in (1.5, -2.0):
            check("fill_", lambda t: t.fill_(value), make(4, 6).t())
        for dst in (torch.empty(6, 4, device=DEVICE).t(), torch.empty(4, 6, device=DEVICE)):  # out's layout
            check("copy_", lambda d, s: d.copy_(s), dst, make(4, 6))
        check("add", lambda a, b: a.add_(b, alpha=2), make(4, 6), make(6))
        check("mul", lambda a, b: a.mul_(b), make(4, 6), make(4, 6))  # same shape: the flat in-place launch
        check("mul", lambda a: a.mul_(a), make(4, 6))
        check("sub", lambda a, b: a.sub_(b), make(4, 6, dtype=torch.float16), make(4, 6))  # computes in fp32: the general path
        check("add", lambda a, b, o: torch.add(a, b, out=o), make(4, 6), make(4, 6), torch.empty(4, 6, device=DEVICE))
        check("_to_copy", lambda t: t.to(torch.float16), make(4, 6, specials=True), exact=True)
    for _ in range(2):  # separate tensors: these layouts are planned from the first call on
        run_gems("copy_", lambda: make(6).copy_(make(6)))
        run_gems("add", lambda: torch.add(make(6), make(6), out=make(6)))
    buf = make(12)
    for src, dst in ((slice(3, 9), slice(6, 12)), (slice(6, 12), slice(3, 9))):
        with pytest.raises(RuntimeError, match="single memory location"):
            run_gems("copy_", lambda: buf[dst].copy_(buf[src]))
    with pytest.raises(RuntimeError, match="single memory location"):
        run_gems("add", lambda: torch.add(buf[:6], buf[3:9], out=buf[6:]))
    with pytest.raises(RuntimeError, match="single memory location"):
        run_gems("add", lambda: buf[:6].add_(buf[3:9]))  # contiguous, same shape, overlapping
    a = make(12)
    want = a[:6] + a[6:]
    run_gems("add", lambda: torch.add(a[:6], a[6:], out=a[6:]))  # out is an input: in place
    torch.testing.assert_close(a[6:], want)


@pytest.mark.skipif(not ON_GPU, reason="needs the CPU beside the vendor's device")
def test_cross_device_copies_run_torchs_kernel():
    # copy_ and _to_copy between the host and the GPU reach gems' CUDA kernels (the GPU is
    # the highest backend among the arguments) and must end in torch's, also when the first
    # tensor is the CPU one
    x = make(3, 4)
    host = x.cpu()
    calls = [lambda: host.to(DEVICE), lambda: x.to("cpu"), lambda: host.to(DEVICE, torch.float16),
             lambda: torch.empty(3, 4).copy_(x), lambda: torch.empty(3, 4, device=DEVICE).copy_(host),
             lambda: torch.tensor([1, 3], device=DEVICE), lambda: torch.zeros_like(host, device=DEVICE)]
    for fn in calls:
        got, _ = run_gems(["copy_", "_to_copy", "zeros"], fn)
        want = fn()
        assert got.device == want.device and got.dtype == want.dtype
        torch.testing.assert_close(got, want, atol=0, rtol=0)

import functools
import subprocess
import sys

import pytest
import torch

import gemsops

import gemsops.ops.arange  # noqa: F401

A = sys.modules["gemsops.ops.arange"]
from tests.util import DEVICE, ON_GPU, assert_close

karange, kstart, kstep = A.arange.__wrapped__, A.arange_start.__wrapped__, A.arange_start_step.__wrapped__

CASES = [(0, 10, 1), (3, 17, 4), (10, -3, -3), (0, 1, 0.1), (-1.5, 2.25, 0.25), (5, 5, 1), (0.0, 1.0, 0.3),
         (2**40, 2**40 + 5, 2), (1, 100000, 7)]


def _int64_step_truncates_to_zero(start, end, step, dtype):
    """torch 2.11 divides by the int64-converted step here and the process dies (SIGFPE)."""
    return dtype == torch.int64 and isinstance(step, float) and step != 0 and int(step) == 0 and (
        (end - start) * step >= 0)


@functools.lru_cache(maxsize=None)
def _torch_arange_in_child(start, end, step, dtype):
    """torch.arange's own outcome, from a child process so that a crash kills only the child:
    ("crash", signal), ("error", exception type name) or ("ok", values)."""
    code = (f"import torch\ntry:\n    print(repr(torch.arange({start!r}, {end!r}, {step!r}, dtype={dtype}, "
            f"device={DEVICE!r}).tolist()))\nexcept Exception as e:\n    print('error', type(e).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode < 0:
        return "crash", -proc.returncode
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()[-1]
    return ("error", out.split()[1]) if out.startswith("error ") else ("ok", eval(out))


@pytest.mark.parametrize("start,end,step", CASES)
@pytest.mark.parametrize("dtype", [None, torch.float32, torch.bfloat16, torch.float16, torch.int32, torch.int64])
def test_arange(start, end, step, dtype):
    if _int64_step_truncates_to_zero(start, end, step, dtype):
        # torch's own call could kill this process; gems raises torch 2.13's error without
        # asking torch, and that must be torch's outcome too, or torch crashing
        outcome = _torch_arange_in_child(start, end, step, dtype)
        assert outcome[0] == "crash" or outcome == ("error", "ValueError"), outcome
        with pytest.raises(ValueError, match="step must be nonzero"):
            A.arange_start_step(start, end, step, dtype=dtype, device=DEVICE)
        with pytest.raises(ValueError, match="step must be nonzero"):
            with gemsops.use_gems(include=["arange"]):
                torch.arange(start, end, step, dtype=dtype, device=DEVICE)
        return
    try:
        ref = torch.arange(start, end, step, dtype=dtype, device=DEVICE)
    except (RuntimeError, ValueError) as err:
        with pytest.raises(type(err)):
            A.arange_start_step(start, end, step, dtype=dtype, device=DEVICE)
        return
    got = A.arange_start_step(start, end, step, dtype=dtype, device=DEVICE)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref.dtype.is_floating_point:
        assert_close(got, ref, scale=2)
    else:
        assert torch.equal(got, ref)
    supported = ref.dtype != torch.float64 and not (not ref.dtype.is_floating_point and any(
        isinstance(a, float) for a in (start, end, step))) and not (ref.dtype == torch.int32 and start > 2**31)
    if supported:
        got = kstep(start, end, step, dtype=dtype, device=DEVICE)
        assert got.dtype == ref.dtype and got.shape == ref.shape


def test_arange_overloads_and_errors():
    assert torch.equal(karange(7, device=DEVICE), torch.arange(7, device=DEVICE))
    assert torch.equal(kstart(-2, 3, device=DEVICE), torch.arange(-2, 3, device=DEVICE))
    assert_close(karange(5, dtype=torch.float32, device=DEVICE), torch.arange(5.0, device=DEVICE))
    assert torch.equal(karange(0, device=DEVICE), torch.arange(0, device=DEVICE))
    for bad in [(0, 5, 0), (0, 5, -1), (0, float("inf"), 1)]:
        with pytest.raises(RuntimeError):
            A.arange_start_step(*bad, device=DEVICE)
    assert torch.equal(A.arange(4, dtype=torch.float64, device=DEVICE),
                       torch.arange(4, dtype=torch.float64, device=DEVICE))


def test_arange_through_enable(tmp_path):
    log = tmp_path / "log"
    gemsops.only_enable(include=["arange"], record=True, path=log)
    pos = torch.arange(0, 6, device=DEVICE)
    inv = 1.0 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.int64, device=DEVICE).float() / 8))
    gemsops.disable()
    assert torch.equal(pos, torch.arange(6, device=DEVICE))
    assert_close(inv, 1.0 / (10000 ** (torch.arange(0, 8, 2, device=DEVICE).float() / 8)))
    assert "aten::arange" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_arange_large():
    assert torch.equal(karange(50_000_000, device=DEVICE), torch.arange(50_000_000, device=DEVICE))
    assert_close(kstep(0, 1, 1e-6, device=DEVICE), torch.arange(0, 1, 1e-6, device=DEVICE))


def test_arange_native_route_under_enable_does_not_recurse():
    # float bounds with an integer dtype go to torch's kernel, also when gems serves arange
    gemsops.only_enable(include=["arange"])
    try:
        got = torch.arange(1.0, 5.0, 2.0, dtype=torch.int64, device=DEVICE)
        d = torch.arange(3, dtype=torch.float64, device=DEVICE)
    finally:
        gemsops.disable()
    assert torch.equal(got, torch.arange(1.0, 5.0, 2.0, dtype=torch.int64, device=DEVICE))
    assert torch.equal(d, torch.arange(3, dtype=torch.float64, device=DEVICE))

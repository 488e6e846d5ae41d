"""Helpers shared by the matmul-family tests."""
import math

import torch

from tests.util import DEVICE, assert_close, reference


def operand(rows, cols, dtype, layout="n", device=None):
    """A (rows, cols) matrix laid out row-major ("n"), column-major ("t") or strided ("s")."""
    device = device or DEVICE
    if layout == "n":
        return torch.randn(rows, cols, dtype=dtype, device=device)
    if layout == "t":
        return torch.randn(cols, rows, dtype=dtype, device=device).t()
    # every other column of a wider matrix: neither dim contiguous
    return torch.randn(rows, 2 * cols + 1, dtype=dtype, device=device)[:, 1::2]


def check(actual, fn, *args, k=1, **kwargs):
    """``actual`` against ``fn`` on float64 inputs, rounded to the result dtype.

    fp32 results carry the fp32 accumulation error of K terms: the tolerance grows with
    sqrt(K). fp16/bf16 results accumulate in fp32 and round once, so their error is the
    final rounding (plus the interpreter's truncating bf16 casts): 2x the dtype tolerance,
    tight enough that a dropped K tile fails.
    """
    expected = reference(fn, *args, out_dtype=actual.dtype, **kwargs)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    scale = max(1.0, math.sqrt(k) / 2) if actual.dtype == torch.float32 else 2.0
    assert_close(actual, expected, scale=scale)


def same_as_native(gems_fn, native_fn, *args, **kwargs):
    """Both raise the same exception type, or both return equal results."""
    try:
        want = native_fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001  (the exact torch error is what is compared)
        try:
            gems_fn(*args, **kwargs)
        except Exception as err2:  # noqa: BLE001
            assert type(err2) is type(err)
            return None
        raise AssertionError(f"native raised {err!r}, gems did not")
    got = gems_fn(*args, **kwargs)
    torch.testing.assert_close(got, want, equal_nan=True)
    return got

"""The registry: declarations and torch's native kernels used for unsupported inputs."""
import pytest
import torch

import gemsops
from gemsops.runtime import registry


def _vendor_tensor(*args, **kwargs):
    return torch.tensor(*args, device=gemsops.VENDOR.device_type, **kwargs)


@pytest.mark.parametrize(
    "overload, self_, number",
    [
        ("add.Tensor", [1 + 2j, 3 - 1j], 1.5),  # complex: gems routes these to torch
        ("mul.Tensor", [1, 2, 3], 2.5),  # int tensor * float: default dtype, as torch
        ("mul.Tensor", [0.5, 1.5], 0.1),  # float64 keeps the double value of 0.1
        ("add.Tensor", [1.0, 2.0], 1j),
    ],
)
def test_native_kernel_takes_python_numbers_for_tensor_args(overload, self_, number):
    dtype = torch.float64 if overload == "mul.Tensor" and isinstance(self_[0], float) else None
    x = _vendor_tensor(self_, dtype=dtype)
    got = registry.native(overload)(x, number)
    want = registry.aten_overload(overload)(x, number)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_in_place_number_on_unsupported_dtype_under_gems():
    x = _vendor_tensor([1 + 1j, 2 - 2j], dtype=torch.complex64)
    want = x + 1.0
    with gemsops.use_gems():
        x.add_(1.0)
    torch.testing.assert_close(x, want, rtol=0, atol=0)


def test_factory_fallback_does_not_recurse():
    # complex fills, which gems leaves to torch, on the vendor's device: must reach torch's
    # own kernel rather than dispatch back into gems
    dev = gemsops.VENDOR.device_type
    with gemsops.use_gems(include=["full", "zeros"]):
        zeros = torch.zeros(3, dtype=torch.complex64, device=dev)
        filled = torch.full((2, 2), 1 + 1j, device=dev)
    assert zeros.dtype == torch.complex64 and not zeros.any()
    assert filled.dtype == torch.complex64 and bool((filled == 1 + 1j).all())

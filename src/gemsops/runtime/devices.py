"""Which tensors the active vendor's kernels may touch."""
from __future__ import annotations

import operator

import torch

from .vendor import VENDOR


def _device_test():
    if VENDOR is None:
        return lambda t: False
    dev = VENDOR.device_type
    if hasattr(torch.Tensor, f"is_{dev}"):
        # ``t.is_cuda`` reads a flag; ``t.device.type`` builds a device object first, ten
        # times slower, and this runs for every tensor of every call
        return operator.attrgetter(f"is_{dev}")
    return lambda t: t.device.type == dev


on_device = _device_test()  # on_device(t): is the tensor t on the vendor's device type
_Tensor = torch.Tensor


def on_vendor_device(*tensors) -> bool:
    """True when every tensor lives on the vendor's device type (None entries are ignored).

    Host functions check this first: an input on another device (CPU tensors on a GPU
    machine, or anything when no vendor is active) goes to torch's own kernel.
    """
    if VENDOR is None:
        return False
    for t in tensors:
        if t is not None and isinstance(t, _Tensor) and not on_device(t):
            return False
    return True

"""Which tensors the active vendor's kernels may touch."""
from __future__ import annotations

import torch

from .vendor import VENDOR


def on_vendor_device(*tensors) -> bool:
    """True when every tensor lives on the vendor's device type (None entries are ignored).

    Host functions check this first: an input on another device (CPU tensors on a GPU
    machine, or anything when no vendor is active) goes to torch's own kernel.
    """
    if VENDOR is None:
        return False
    dev = VENDOR.device_type
    for t in tensors:
        if t is not None and isinstance(t, torch.Tensor) and t.device.type != dev:
            return False
    return True

"""gemsops runtime: vendor selection, op declarations, scoping, tuner and op log."""
from .vendor import VENDOR, VendorError, vendor_name  # noqa: F401  (first: sets TRITON_INTERPRET)
from .registry import Unsupported, declare, fallback, native, plain_tensors, records_grad, with_fallback  # noqa: F401
from .tuner import Tuner, bucket, capturing  # noqa: F401
from .devices import on_device, on_vendor_device  # noqa: F401
from .launch import Launcher, Plans, launcher  # noqa: F401

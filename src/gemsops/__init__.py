"""gemsops: Triton implementations of aten ops, registered through torch.library.

    import gemsops
    gemsops.enable()                       # every gems op replaces torch's kernel
    with gemsops.use_gems(include=["mm"]): # scoped, this thread only
        ...
    gemsops.ops.mm(a, b)                   # explicit call, no enabling needed
"""
from .runtime.vendor import VENDOR, VendorError, vendor_name  # noqa: F401  (before any kernel)
from . import ops  # noqa: F401  (declares every op)
from .runtime.scope import all_registered_ops, disable, enable, only_enable, use_gems  # noqa: F401
from .runtime.tuner import cache_dir  # noqa: F401



def apply_gems_patches_to_vllm(verbose: bool = False, exclude=()):
    """Route vLLM's norms, activations, rotary, KV-cache writes and attention to gems."""
    from .vllm_patches import apply_gems_patches_to_vllm as apply

    return apply(verbose=verbose, exclude=exclude)


__version__ = "0.1.0"
__all__ = [
    "enable", "only_enable", "disable", "use_gems", "all_registered_ops",
    "vendor_name", "ops", "cache_dir", "apply_gems_patches_to_vllm",
]

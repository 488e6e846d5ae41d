"""clone: a same-dtype copy, with torch's ``memory_format`` rules (see ``copy._to_copy_run``).

Autograd's backward of views and of ``contiguous()`` calls clone a lot; it is a plain
strided copy through the pointwise store.
"""
from ..runtime import declare, with_fallback
from .copy import _to_copy_run

__all__ = ["clone"]


@with_fallback("clone")
def clone(self, *, memory_format=None):
    """aten::clone: a new tensor with ``self``'s values (dense inputs keep their strides)."""
    return _to_copy_run(self, memory_format=memory_format)


declare("clone", {"clone": clone})

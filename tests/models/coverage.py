"""Which share of a workload's aten calls gems served, counted with a TorchDispatchMode.

    from tests.models.coverage import aten_coverage
    gemsops.enable()
    result, cov = aten_coverage(train_step, model, opt, ids)
    print(cov.table()); cov.share   # calls served by gems / counted calls

Counted: every aten call that reaches the dispatch mode (below autograd, after
CompositeImplicit ops decompose), except views and metadata (``is_metadata``). A call is
served when the gems host function of that overload ran for it and did not hand it to
torch's kernel (``tests/gems_probe.GemsProbe``); calls torch's kernels make internally
are not counted (the mode sees only the outermost call).
"""
from __future__ import annotations

import collections
import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.gems_probe import GemsProbe

# metadata / allocation ops that are not views by their schema
_METADATA = {
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted",
    "_unsafe_view", "detach", "alias", "lift_fresh", "_local_scalar_dense", "is_same_size",
    "_has_compatible_shallow_copy_type", "set_", "resize_", "resize_as_", "_reshape_alias",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "_nested_tensor_size",
    "dim", "size", "stride", "numel", "is_contiguous", "record_stream",
}


def overload_name(func: torch._ops.OpOverload) -> str:
    """The registry's spelling of an aten overload: ``add.Tensor``, ``mm``."""
    name = func._schema.name.split("::", 1)[-1]
    over = func._overloadname
    return name if over == "default" else f"{name}.{over}"


def is_metadata(func: torch._ops.OpOverload) -> bool:
    """Views (an output aliases an input without writing it), metadata/allocation ops and
    profiler markers (``_record_function_*``, which optimizers emit around ``step``)."""
    name = func._schema.name.split("::", 1)[-1]
    if name in _METADATA or name.startswith("_record_function"):
        return True
    for ret in func._schema.returns:
        info = ret.alias_info
        if info is not None and not info.is_write:
            return True
    return False


@dataclasses.dataclass
class Coverage:
    calls: collections.Counter  # counted calls per overload
    served: collections.Counter  # of those, served by gems
    routed: collections.Counter  # reached gems' host function, which sent it to torch
    excluded: collections.Counter  # views and metadata, not counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def served_total(self) -> int:
        return sum(self.served.values())

    @property
    def share(self) -> float:
        return self.served_total / self.total if self.total else 0.0

    def table(self, top: int | None = None) -> str:
        """Per-overload counts, most frequent first, and the share of calls gems served."""
        rows = self.calls.most_common(top)
        width = max((len(o) for o, _ in rows), default=8)
        lines = [f"{'aten overload':<{width}}  {'calls':>6}  {'gems':>6}  {'routed':>6}"]
        for ov, n in rows:
            lines.append(f"{ov:<{width}}  {n:>6}  {self.served[ov]:>6}  {self.routed[ov]:>6}")
        lines.append(f"gems served {self.served_total} of {self.total} aten calls "
                     f"({100 * self.share:.1f}%), views/metadata not counted: {sum(self.excluded.values())}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"total": self.total, "served": self.served_total, "share": self.share,
                "calls": dict(self.calls), "served_by_op": dict(self.served),
                "routed_by_op": dict(self.routed), "excluded": dict(self.excluded)}


class _Counter(TorchDispatchMode):
    def __init__(self, probe: GemsProbe):
        super().__init__()
        self.probe = probe
        self.cov = Coverage(collections.Counter(), collections.Counter(), collections.Counter(),
                            collections.Counter())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ov = overload_name(func)
        if is_metadata(func):
            self.cov.excluded[ov] += 1
            return func(*args, **kwargs)
        served, routed = self.probe.served[ov], self.probe.routed[ov]
        out = func(*args, **kwargs)
        self.cov.calls[ov] += 1
        if self.probe.served[ov] > served:
            self.cov.served[ov] += 1
        elif self.probe.routed[ov] > routed:
            self.cov.routed[ov] += 1
        return out


def aten_coverage(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` counting aten calls; returns (fn's result, Coverage).

    Gems must be enabled by the caller (``enable``/``only_enable``/``use_gems``); with
    gems off every call counts as not served.
    """
    with GemsProbe() as probe:
        mode = _Counter(probe)
        with mode:
            result = fn(*args, **kwargs)
    return result, mode.cov

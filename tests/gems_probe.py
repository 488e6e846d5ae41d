"""Counting which gems host functions ran and which of their calls went back to torch.

``GemsProbe`` is a test-only hook that changes no gemsops source. While it is active it
replaces, in ``gemsops.runtime.registry``, every declaration's host function with a
counting wrapper (``_DECLS``) and every captured native kernel with a counting wrapper
(``_NATIVE``), then re-registers whatever gems kernels are live so that they pick the
wrappers up. A host-function call during which the native kernel of the *same* overload
ran (``with_fallback`` -> ``fallback`` -> ``native(overload)``, or a direct
``native(overload)(...)`` call) was routed to native; any other completed call was
served by gems. On exit everything is restored and re-registered.

``dry=True`` makes the wrapper run the native kernel instead of the host function:
gems' dispatch entries are in place (so every call the dispatcher would hand to gems is
seen, including calls that torch's own kernels make internally) but nothing is computed
by Triton. The OpInfo harness traces which op_db entries reach which overloads this way.
"""
from __future__ import annotations

import collections
import dataclasses

import torch

from gemsops.runtime import registry, scope


class GemsProbe:
    """Context manager counting host-function calls per aten overload (see module doc)."""

    def __init__(self, dry: bool = False):
        self.dry = dry
        self.served = collections.Counter()  # host function finished without native
        self.routed = collections.Counter()  # host function ended in torch's kernel
        self.errors = collections.Counter()  # host function raised
        self.native_calls = collections.Counter()
        self._saved_decls = None
        self._saved_native = None

    def reset(self) -> None:
        for c in (self.served, self.routed, self.errors, self.native_calls):
            c.clear()

    def snapshot(self) -> tuple:
        """Copies of (served, routed, errors) for a later :meth:`delta`."""
        return collections.Counter(self.served), collections.Counter(self.routed), collections.Counter(self.errors)

    def delta(self, snap) -> tuple:
        served, routed, errors = snap
        return self.served - served, self.routed - routed, self.errors - errors

    # -- installation -------------------------------------------------------------------------
    def __enter__(self):
        if self._saved_decls is not None:
            raise RuntimeError("GemsProbe is not reentrant")
        with scope._lock:
            _drop_registrations()  # pristine dispatch table: native() captures torch's kernel
            decls = registry._DECLS
            self._saved_decls = dict(decls)
            for ov in decls:
                registry.native(ov)
            self._saved_native = dict(registry._NATIVE)
            for ov, decl in self._saved_decls.items():
                native = self._saved_native[ov]
                registry._NATIVE[ov] = self._count_native(ov, native)
                impl = _scalars_as_tensors(ov, native) if self.dry else decl.impl
                decls[ov] = dataclasses.replace(decl, impl=self._count_impl(ov, impl))
            scope._sync_registrations()
        return self

    def __exit__(self, *exc):
        with scope._lock:
            _drop_registrations()
            registry._DECLS.clear()
            registry._DECLS.update(self._saved_decls)
            registry._NATIVE.clear()
            registry._NATIVE.update(self._saved_native)
            self._saved_decls = self._saved_native = None
            scope._sync_registrations()
        return False

    def _count_native(self, overload, native):
        calls = self.native_calls

        def counted_native(*args, **kwargs):
            calls[overload] += 1
            return native(*args, **kwargs)

        return counted_native

    def _count_impl(self, overload, impl):
        probe = self

        def counted_impl(*args, **kwargs):
            before = probe.native_calls[overload]
            try:
                out = impl(*args, **kwargs)
            except BaseException:
                probe.errors[overload] += 1
                raise
            if probe.dry or probe.native_calls[overload] == before:
                probe.served[overload] += 1
            else:
                probe.routed[overload] += 1
            return out

        counted_impl.__name__ = getattr(impl, "__name__", "impl")
        return counted_impl


def _scalars_as_tensors(overload, native):
    """``native`` accepting Python numbers where the schema has a Tensor.

    A C++ caller's wrapped-number tensor (``x.add_(1.0)`` -> ``add_.Tensor``) reaches a
    Python kernel as a Python number, which the captured kernel's ``call_boxed`` rejects.
    The dry probe only needs the call to go through, so a plain 0-d tensor stands in.
    """
    schema = registry.aten_overload(overload)._schema
    pos = [i for i, a in enumerate(schema.arguments) if not a.kwarg_only and str(a.type) == "Tensor"]
    kw = {a.name for a in schema.arguments if a.kwarg_only and str(a.type) == "Tensor"}
    if not pos and not kw:
        return native
    numbers = (bool, int, float, complex)

    def call(*args, **kwargs):
        if any(i < len(args) and isinstance(args[i], numbers) for i in pos):
            args = tuple(torch.tensor(a) if i in pos and isinstance(a, numbers) else a for i, a in enumerate(args))
        if kw and any(isinstance(v, numbers) for k, v in kwargs.items() if k in kw):
            kwargs = {k: torch.tensor(v) if k in kw and isinstance(v, numbers) else v for k, v in kwargs.items()}
        return native(*args, **kwargs)

    return call


def _drop_registrations() -> None:
    """Destroy gems' live torch.library registrations (``_sync_registrations`` remakes them)."""
    libs = scope._state.libs
    for ov in list(libs):
        libs.pop(ov)._destroy()

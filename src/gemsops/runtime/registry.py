"""Declarations of which aten overloads each op file implements, and the native kernels.

Every op module calls :func:`declare` next to its host functions; importing
``gemsops.ops`` therefore fills the registry. There is no central table.
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch.autograd import forward_ad as _forward_ad

from .devices import on_device
from .vendor import VENDOR


@dataclass(frozen=True)
class OpDecl:
    overload: str  # aten overload name as torch.library spells it: "add.Tensor", "mm"
    family: str  # user-facing name covering several overloads: "add"
    impl: Callable
    autograd: bool = False  # registered above autograd too (see ``declare``)

    def dispatch_keys(self) -> tuple[str, ...]:
        """The dispatch keys gems registers this overload for: the vendor's backend key, and
        for an autograd-level declaration its autograd key first (``AutogradCUDA``)."""
        key = VENDOR.dispatch_key
        return (f"Autograd{key}", key) if self.autograd else (key,)


_DECLS: dict[str, OpDecl] = {}
_FAMILIES: dict[str, list[str]] = {}


def declare(family: str, impls: dict[str, Callable], *, autograd: bool = False) -> None:
    """Declare that ``impls`` (aten overload name -> host function) implement ``family``.

    Overloads that do not exist in the running torch are skipped, so one op file can
    name overloads that only newer torch versions have.

    ``autograd=True`` is for composite aten ops (``cross_entropy_loss``) that torch
    decomposes above the backend: their host function is registered at the vendor's
    autograd key (and at the backend key, which inference tensors reach), runs before
    autograd and records its own backward. It receives any tensor that reaches that key,
    fake and functional tensors of ``torch.compile`` tracing included, so it must send
    those to :func:`fallback` (``plain_tensors`` tells them apart).
    """
    for overload, impl in impls.items():
        if not _aten_has(overload):
            continue
        if overload in _DECLS:
            raise ValueError(f"aten overload {overload!r} declared twice")
        _DECLS[overload] = OpDecl(overload, family, impl, autograd)
        _FAMILIES.setdefault(family, []).append(overload)


def _aten_has(overload: str) -> bool:
    name, _, over = overload.partition(".")
    packet = getattr(torch.ops.aten, name, None)
    return packet is not None and hasattr(packet, over or "default")


def declarations() -> dict[str, OpDecl]:
    return _DECLS


def families() -> dict[str, list[str]]:
    return _FAMILIES


def resolve(names) -> set[str]:
    """Overloads named by ``names`` (families or exact overloads). Unknown names warn."""
    if names is None:
        return set()
    if isinstance(names, str):
        names = [names]
    out: set[str] = set()
    for raw in names:
        name = raw.removeprefix("aten::")
        if name in _FAMILIES:
            out.update(_FAMILIES[name])
        elif name in _DECLS:
            out.add(name)
        elif name.endswith(".default") and name[: -len(".default")] in _DECLS:
            out.add(name[: -len(".default")])
        else:
            known = sorted(set(_FAMILIES) | set(_DECLS))
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            warnings.warn(f"gemsops: unknown op name {raw!r} ignored{hint}", stacklevel=3)
    return out


def aten_overload(overload: str) -> torch._ops.OpOverload:
    name, _, over = overload.partition(".")
    return getattr(getattr(torch.ops.aten, name), over or "default")


_NATIVE: dict[str, Callable] = {}


def native(overload: str) -> Callable:
    """The kernel torch itself runs for ``overload`` on the vendor's dispatch key.

    Captured the first time it is asked for, and always before gems registers its own
    kernel for that overload, so calling it never re-enters gems for the same op.
    Host functions use it for every input their kernels do not handle.
    """
    fn = _NATIVE.get(overload)
    if fn is None:
        fn = _NATIVE[overload] = _capture_native(overload)
    return fn


def _capture_native(overload: str) -> Callable:
    op = aten_overload(overload)
    if VENDOR is None:
        return op
    decl = _DECLS.get(overload)
    key = decl.dispatch_keys()[0] if decl is not None else VENDOR.dispatch_key
    kernel = torch.library.get_kernel(op, key)
    keyset = torch._C.DispatchKeySet(key)
    call = kernel.call_boxed
    tensor_slots = [i for i, a in enumerate(op._schema.arguments) if str(a.type) == "Tensor"]

    def native_kernel(*args, **kwargs):
        # the boxed call does not turn a Python number into a Tensor argument the way the
        # Python binding does (``x.add_(1.0)`` reaches add_.Tensor with a float)
        if any(i < len(args) and _is_number(args[i]) for i in tensor_slots):
            args = list(args)
            for i in tensor_slots:
                if i < len(args) and _is_number(args[i]):
                    args[i] = _wrapped_number(args[i], args)
        return call(keyset, *args, **kwargs)

    native_kernel.__name__ = f"native_{overload.replace('.', '_')}"
    return native_kernel


def _is_number(x) -> bool:
    return isinstance(x, (bool, int, float, complex))


def _wrapped_number(value, args) -> torch.Tensor:
    """A 0-d CPU tensor that promotes like the Python number ``value`` among ``args``.

    Torch marks such tensors "wrapped numbers", which Python cannot do: pick the dtype
    whose promotion matches (a float among integer tensors gives the default dtype, a
    float among float tensors keeps its double value and takes the tensors' dtype).
    """
    dtypes = [a.dtype for a in args if isinstance(a, torch.Tensor)]
    if isinstance(value, bool) or isinstance(value, int):
        return torch.tensor(value)
    if isinstance(value, float):
        wide = any(d.is_floating_point or d.is_complex for d in dtypes)
        return torch.tensor(value, dtype=torch.float64 if wide else torch.get_default_dtype())
    wide = any(d in (torch.float64, torch.complex128) for d in dtypes)
    return torch.tensor(value, dtype=torch.complex128 if wide else torch.complex64)


def fallback(overload: str, *args, **kwargs):
    """Run torch's own implementation of ``overload`` for inputs gems does not handle.

    Inputs on the vendor's device go to the captured native kernel; inputs elsewhere go
    through the ordinary dispatcher, where gems is not registered.
    """
    if VENDOR is not None and _any_on_vendor_device(args, kwargs):
        return native(overload)(*args, **kwargs)
    return aten_overload(overload)(*args, **kwargs)


def _any_on_vendor_device(args, kwargs) -> bool:
    # any tensor counts, not just the first: add(cpu_0d, cuda) dispatches on CUDA, and
    # re-dispatching it would lead straight back to gems
    seen_tensor = False
    for a in (*args, *kwargs.values()):
        for t in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(t, torch.Tensor):
                if on_device(t):
                    return True
                seen_tensor = True
    if seen_tensor:
        return False
    dev = VENDOR.device_type
    # factories (full, arange) have no tensor input: torch dispatched them by ``device``,
    # so the dispatcher would lead straight back to gems for the vendor's device
    requested = kwargs.get("device")
    requested = torch.get_default_device() if requested is None else torch.device(requested)
    return requested.type == dev


_is_functorch_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor",
                                lambda t: False)
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def records_grad(*tensors) -> bool:
    """True when autograd would record this call: grad mode on and a tensor given (None is
    skipped) requires a gradient. Host functions that build no backward send such calls to
    torch (or to their own autograd.Function)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def plain_tensors(*tensors) -> bool:
    """True when every tensor given (None is skipped) is an ordinary tensor that no Python
    dispatch mode and no functorch transform is watching.

    An autograd-level host function (``declare(..., autograd=True)``) sees tensors before
    torch's Python and functorch layers do: fake and functional tensors while
    ``torch.compile`` traces, a ``TorchDispatchMode`` counting ops, ``vmap``/``grad``
    wrappers, dual tensors of forward-mode AD. Only plain tensors may go to a Triton
    kernel; the rest take torch's path.
    """
    if torch._C._len_torch_dispatch_stack() or _forward_ad._current_level >= 0:
        # forward-mode AD: the autograd key is where tangents propagate; the kernel would drop them
        return False
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN_TYPES or _is_functorch_wrapped(t)):
            return False
    return True


class Unsupported(Exception):
    """Raised inside a host function for an input its kernel does not handle."""


class NotOnCurrentDevice(Unsupported):
    """A kernel launch whose tensors are not all on the current device.

    Triton launches on the current device, and gems hands it raw addresses, so such a
    launch would read another GPU's memory: an illegal-address fault that ends the
    process or, with peer access on, a result where torch raises for mixed devices. When
    every tensor is on one other GPU the launcher switches to it (a model spread over
    GPUs by ``device_map="auto"`` runs with the current device left at 0); it raises
    this for tensors on several devices, which host functions treat as any Unsupported
    input: torch's kernel then raises its own error. ``device`` is set when the tensors
    share one device but the launch may not switch there (the tuner, which must time on
    that device, catches it and tunes again with that device current).
    """

    def __init__(self, message: str, device: int | None = None):
        super().__init__(message)
        self.device = device


def with_fallback(overload: str):
    """Decorate a host function so that :class:`Unsupported` runs torch's kernel instead."""

    def wrap(fn):
        def host(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Unsupported:
                return fallback(overload, *args, **kwargs)

        host.__name__, host.__qualname__, host.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        host.__wrapped__ = fn
        return host

    return wrap

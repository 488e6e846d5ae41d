"""Turning gems on and off: ``enable``, ``only_enable``, ``disable`` and ``use_gems``.

Mechanism. Each declared aten overload gets its own ``torch.library.Library`` holding one
kernel for the vendor's dispatch key (and its autograd key, for the few composite ops
declared with ``autograd=True``). That kernel asks which overloads are active for the
calling thread (the innermost ``use_gems`` block of that thread, else the global set
from ``enable``) and runs either the gems host function or torch's own kernel, captured
with ``torch.library.get_kernel`` before the override. An overload is registered while
the global set or any live ``use_gems`` block (in any thread) needs it, and its library
is destroyed otherwise, so ``disable()`` leaves torch's dispatch table exactly as it was.
Measured on CPU (torch 2.13): a tiny ``add`` costs 2.9 us native, 4.5 us through the
override when it falls back to native.
"""
from __future__ import annotations

import contextlib
import threading
import warnings

import torch

from . import registry
from .oplog import OpRecorder
from .vendor import VENDOR

_lock = threading.RLock()
class _ThreadState(threading.local):
    stack: list | None = None  # frozensets, innermost use_gems block last (a class default:
    # reading a missing thread-local attribute raises internally, which costs a microsecond)


_tls = _ThreadState()


class _State:
    global_active: frozenset = frozenset()
    recorder: OpRecorder | None = None
    live_scopes: dict = {}  # id(token) -> frozenset, for every thread's open blocks
    scope_stacks: dict = {}  # thread ident -> that thread's stack, while it has open blocks
    libs: dict = {}  # overload -> torch.library.Library


_state = _State()
_in_backward = torch._C._current_graph_task_id  # -1 outside autograd's backward


def _in_autograd_thread() -> bool:
    # autograd's device threads are started by C++, so Python sees them as dummy threads;
    # a Python thread running backward on CPU tensors runs it itself and keeps its own state
    return isinstance(threading.current_thread(), threading._DummyThread)


def _backward_scope() -> frozenset:
    """The ops active for a backward pass that autograd runs in one of its own threads.

    On CUDA, autograd runs backward nodes in a device thread, not in the thread that
    called ``backward()``; that thread's ``use_gems`` block must still apply. The device
    thread cannot tell which thread started the pass, so when exactly one thread has
    open blocks, its innermost block applies; with blocks open in several threads at
    once, backward follows the global ``enable()`` state.
    """
    stacks = list(_state.scope_stacks.values())
    if len(stacks) == 1 and stacks[0]:
        return stacks[0][-1]
    return _state.global_active


def _make_kernel(decl: registry.OpDecl):
    overload, impl = decl.overload, decl.impl
    native = registry.native(overload)

    def gems_kernel(*args, **kwargs):
        stack = _tls.stack
        if stack:
            active = stack[-1]
        elif _state.scope_stacks and _in_backward() != -1 and _in_autograd_thread():
            active = _backward_scope()
        else:
            active = _state.global_active
        if overload in active:
            rec = _state.recorder
            if rec is not None:
                rec.log(overload, args, kwargs)
            return impl(*args, **kwargs)
        return native(*args, **kwargs)

    gems_kernel.__name__ = f"gems_{overload.replace('.', '_')}"
    return gems_kernel


def _sync_registrations() -> None:
    needed = set(_state.global_active)
    for ops in _state.live_scopes.values():
        needed |= ops
    decls = registry.declarations()
    for overload in needed - _state.libs.keys():
        decl = decls[overload]
        kernel = _make_kernel(decl)  # captures the native kernel before overriding it
        lib = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():
            # torch warns once per process that an aten kernel is being overridden;
            # replacing it is the purpose of this library
            warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel.*")
            warnings.filterwarnings("ignore", message=".*Warning only once for all operators.*")
            for key in decl.dispatch_keys():
                lib.impl(overload, kernel, key)
        _state.libs[overload] = lib
    for overload in _state.libs.keys() - needed:
        _state.libs.pop(overload)._destroy()


def _no_vendor_warning(what: str) -> None:
    warnings.warn(
        f"gemsops.{what}: no GPU is visible and GEMS_VENDOR is unset, so native kernels stay "
        "in place (set GEMS_VENDOR=interpreter to run the kernels on CPU through Triton's interpreter)",
        stacklevel=3,
    )


def _set_recorder(record: bool, once: bool, path) -> None:
    old = _state.recorder
    _state.recorder = OpRecorder(path, once) if record else None
    if old is not None:
        old.close()


def _all_ops() -> frozenset:
    return frozenset(registry.declarations())


def enable(*, unused=None, record: bool = False, once: bool = False, path=None) -> None:
    """Route every gems op except those named in ``unused`` to gems, process-wide.

    Replaces whatever an earlier ``enable``/``only_enable`` chose. ``record=True``
    appends one line per gems op call to ``path`` (default ``./gems_oplog.txt``);
    ``once=True`` logs each (overload, dtypes) pair only once.
    """
    if VENDOR is None:
        _no_vendor_warning("enable")
        return
    _set_global(_all_ops() - registry.resolve(unused), record, once, path)


def only_enable(*, include=None, record: bool = False, once: bool = False, path=None) -> None:
    """Route only the ops named in ``include`` (families or exact overloads) to gems."""
    if VENDOR is None:
        _no_vendor_warning("only_enable")
        return
    _set_global(frozenset(registry.resolve(include)), record, once, path)


def _set_global(active: frozenset, record, once, path) -> None:
    with _lock:
        _state.global_active = active
        _set_recorder(record, once, path)
        _sync_registrations()


def disable() -> None:
    """Give every op back to torch's native kernels (``use_gems`` blocks still open keep theirs)."""
    with _lock:
        _state.global_active = frozenset()
        _set_recorder(False, False, None)
        if VENDOR is not None:
            _sync_registrations()


@contextlib.contextmanager
def use_gems(include=None, exclude=None, record: bool = False, once: bool = False, path=None):
    """Within the block, and only in this thread, route the chosen ops to gems.

    ``include`` names the ops to use (everything else runs natively); ``exclude`` names
    ops to leave native while using all others. If both are given, ``include`` wins and
    ``exclude`` is ignored. Blocks nest; the innermost choice applies, and leaving a
    block (normally or by an exception) restores exactly what was active before,
    including a global ``enable()``.
    """
    if VENDOR is None:
        _no_vendor_warning("use_gems")
        yield
        return
    if include is not None:
        active = frozenset(registry.resolve(include))
    else:
        active = _all_ops() - registry.resolve(exclude)
    token = object()
    old_recorder = _state.recorder
    with _lock:
        _state.live_scopes[id(token)] = active
        if record:
            _state.recorder = OpRecorder(path, once)
        _sync_registrations()
    stack = _tls.stack
    if stack is None:
        stack = _tls.stack = []
    stack.append(active)
    thread = threading.get_ident()
    with _lock:
        _state.scope_stacks[thread] = stack
    try:
        yield
    finally:
        stack.pop()
        with _lock:
            if not stack:
                _state.scope_stacks.pop(thread, None)
            del _state.live_scopes[id(token)]
            if record:
                _state.recorder.close()
                _state.recorder = old_recorder
            _sync_registrations()


def all_registered_ops() -> list[str]:
    """Names of the aten overloads gems serves in the calling thread right now."""
    stack = _tls.stack
    active = stack[-1] if stack else _state.global_active
    return sorted(active)


@contextlib.contextmanager
def natively():
    """Inside the block this thread runs torch's own kernels, whatever is enabled.

    For torch calls gems itself makes that are not the user's: the tuner's timing loop
    (Triton's L2 flush is a ``zero_`` per repetition) and the interpreter's argument copies.
    They must neither re-enter gems nor fill the op log.
    """
    stack = _tls.stack
    if stack is None:
        stack = _tls.stack = []
    stack.append(frozenset())
    try:
        yield
    finally:
        stack.pop()


def _interpreter_launches_run_natively() -> None:
    """While Triton's interpreter runs a kernel, gems is off for that thread.

    The interpreter moves kernel arguments with torch ops of its own (``copy_`` of every
    argument's storage after each launch); those are not the model's calls.
    """
    from triton.runtime import interpreter

    call = interpreter.GridExecutor.__call__
    if getattr(call, "_gems_native", False):
        return

    def run_natively(self, *args, **kwargs):
        with natively():
            return call(self, *args, **kwargs)

    run_natively._gems_native = True
    interpreter.GridExecutor.__call__ = run_natively


if VENDOR is not None and VENDOR.interpreter:
    _interpreter_launches_run_natively()

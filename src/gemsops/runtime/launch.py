"""A lean launch path for Triton kernels on the hot path.

``JITFunction.run`` redoes, on every call, work whose answer rarely changes: binding
and specializing every argument, hashing the specialization, checking globals, reading
knobs. For tiny tensors that costs far more than the kernel. :class:`Launcher` keys
the compiled kernel on what decides Triton's specialization (tensor dtypes and 16-byte
alignment, integer values 1 / multiples of 16 / 32-bit range, constexpr values,
device), compiles through the normal path once per key, and afterwards calls the
compiled kernel directly.

Anything unexpected (a Triton whose CompiledKernel.run differs, the interpreter, a
launch hook) falls back to the normal path, which is always correct.
"""
from __future__ import annotations

import inspect

import torch

from .vendor import VENDOR

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _spec(a):
    if isinstance(a, torch.Tensor):
        return (a.dtype, a.data_ptr() & 15 == 0)
    t = type(a)
    if t is int:
        return (a == 1, a & 15 == 0, _INT32_MIN <= a <= _INT32_MAX)
    if t is float:
        return t
    return a


class Launcher:
    """``Launcher(kernel)(grid, *args, **constexprs)`` launches like ``kernel[grid](*args, **constexprs)``.

    Pass runtime arguments positionally and every constexpr (and launch option such as
    ``num_warps``) by keyword, the same way at every call site of one kernel.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.compiled: dict = {}
        self.fast = VENDOR is not None and not VENDOR.interpreter
        self.params = list(kernel.arg_names) if self.fast else []
        self.defaults = {
            name: p.default for name, p in inspect.signature(kernel.fn).parameters.items()
            if p.default is not inspect.Parameter.empty
        } if self.fast else {}
        self.runtime_params = {p.name for p in kernel.params if not p.is_constexpr} if self.fast else set()

    def __getitem__(self, grid):
        """``launcher[grid](*args, **constexprs)``, the spelling of ``kernel[grid](...)``."""
        return lambda *args, **constexprs: self(grid, *args, **constexprs)

    def __call__(self, grid, *args, **constexprs):
        if not self.fast or callable(grid):
            return self.kernel[grid](*args, **constexprs)
        device = _current_device()
        key = (device, tuple(map(_spec, args)), tuple(constexprs.items()))
        entry = self.compiled.get(key)
        if entry is None:
            if not self.runtime_params.isdisjoint(constexprs):
                self.fast = False  # a runtime argument passed by name: its value is no key
            kernel = self.kernel[grid](*args, **constexprs)
            if kernel is not None and self.fast and _hooks_unset():
                # the constexprs are part of the key, so the trailing arguments are fixed
                tail = tuple(constexprs[name] if name in constexprs else self.defaults.get(name)
                             for name in self.params[len(args):])
                self.compiled[key] = (kernel.run, kernel.function, kernel.packed_metadata, tail)
            return None
        if not _hooks_unset():  # a profiler hooked launches after we cached: let Triton call it
            return self.kernel[grid](*args, **constexprs)
        run, function, metadata, tail = entry
        try:
            run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                _current_stream(device), function, metadata, None, None, None, *args, *tail)
        except TypeError:
            # this Triton's launcher wants other arguments: use the normal path from now on
            self.fast = False
            self.kernel[grid](*args, **constexprs)


if VENDOR is not None and VENDOR.device_type == "cuda":
    _current_device = torch._C._cuda_getDevice
    _current_stream = torch._C._cuda_getCurrentRawStream
else:
    _current_device = _current_stream = None


try:
    from triton import knobs as _knobs
except ImportError:  # a Triton without knobs: always the normal launch path
    _knobs = None


def _hook_unset(hook) -> bool:
    # Triton <= 3.3 keeps a plain callable or None; later versions an always-present
    # HookChain whose ``calls`` list is empty until a profiler adds a hook
    return hook is None or (type(hook).__name__ == "HookChain" and not hook.calls)


def _hooks_unset() -> bool:
    if _knobs is None:
        return False
    runtime = _knobs.runtime
    return _hook_unset(runtime.launch_enter_hook) and _hook_unset(runtime.launch_exit_hook)


_LAUNCHERS: dict = {}


def launcher(kernel) -> Launcher:
    """The shared :class:`Launcher` of ``kernel``: ``launcher(k)[grid](...)`` for ``k[grid](...)``."""
    lau = _LAUNCHERS.get(kernel)
    if lau is None:
        lau = _LAUNCHERS[kernel] = Launcher(kernel)
    return lau


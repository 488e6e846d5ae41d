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
    """``Launcher(kernel)(grid, *args, **constexprs)`` launches like ``kernel[grid](*args, **constexprs)``."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.compiled: dict = {}
        self.fast = VENDOR is not None and not VENDOR.interpreter
        self.params = list(kernel.arg_names) if self.fast else []
        self.defaults = {
            name: p.default for name, p in inspect.signature(kernel.fn).parameters.items()
            if p.default is not inspect.Parameter.empty
        } if self.fast else {}

    def __call__(self, grid, *args, **constexprs):
        if not self.fast:
            return self.kernel[grid](*args, **constexprs)
        device = torch.cuda.current_device()
        key = (device, tuple(map(_spec, args)), tuple(constexprs.items()))
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self.kernel[grid](*args, **constexprs)
            if compiled is not None and _hooks_unset():
                self.compiled[key] = (compiled, self._full_args_builder(len(args), constexprs))
            return None
        kernel, build = compiled
        try:
            kernel.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                       torch._C._cuda_getCurrentRawStream(device), kernel.function, kernel.packed_metadata,
                       None, None, None, *build(args, constexprs))
        except TypeError:
            # this Triton's launcher wants other arguments: use the normal path from now on
            self.fast = False
            self.kernel[grid](*args, **constexprs)

    def _full_args_builder(self, n_positional, constexprs):
        """Arguments in signature order, constexprs included, as CompiledKernel.run takes them."""
        rest = self.params[n_positional:]
        defaults = self.defaults

        def build(args, kw):
            return (*args, *(kw[name] if name in kw else defaults.get(name) for name in rest))

        return build


def _hooks_unset() -> bool:
    try:
        from triton import knobs

        return knobs.runtime.launch_enter_hook is None and knobs.runtime.launch_exit_hook is None
    except ImportError:
        return False

"""A lean launch path for Triton kernels on the hot path.

``JITFunction.run`` redoes, on every call, work whose answer rarely changes: binding
and specializing every argument, hashing the specialization, checking globals, reading
knobs. For tiny tensors that costs far more than the kernel. :class:`Launcher` keys
the compiled kernel on what decides Triton's specialization (tensor dtypes and 16-byte
alignment, integer values 1 / multiples of 16 / 32-bit range, constexpr values,
device), compiles through the normal path once per key, and afterwards calls the
compiled kernel directly. :class:`Prepared` does the same for a launch whose grid and
trailing (integer) arguments a caller's plan fixes, keying only the per-call head.

Anything unexpected (a Triton whose CompiledKernel.run differs, the interpreter, a
launch hook) falls back to the normal path, which is always correct.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import re
import threading

import torch

from . import tuner as _tuner
from .registry import NotOnCurrentDevice
from .vendor import VENDOR

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _spec(a):
    """What Triton specializes a runtime argument on (its value only where it matters)."""
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
    ``num_warps``) by keyword, the same way at every call site of one kernel. A call site
    whose constexprs repeat can keep ``launcher.bind(**constexprs)`` and skip hashing them.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.fast = VENDOR is not None and not VENDOR.interpreter
        self.params = list(kernel.arg_names) if self.fast else []
        self.defaults = {
            name: p.default for name, p in inspect.signature(kernel.fn).parameters.items()
            if p.default is not inspect.Parameter.empty
        } if self.fast else {}
        self.runtime_params = {p.name for p in kernel.params if not p.is_constexpr} if self.fast else set()
        self.bound: dict = {}

    def bind(self, **constexprs) -> Bound:
        """The launch of this kernel with these constexprs: ``bound(grid, *args)``."""
        items = tuple(constexprs.items())
        b = self.bound.get(items)
        if b is None:
            if not self.runtime_params.isdisjoint(constexprs):
                self.fast = False  # a runtime argument passed by name: its value is no key
            b = self.bound[items] = Bound(self, constexprs)
        return b

    def __getitem__(self, grid):
        """``launcher[grid](*args, **constexprs)``, the spelling of ``kernel[grid](...)``."""
        return lambda *args, **constexprs: self.bind(**constexprs)(grid, *args)

    def __call__(self, grid, *args, **constexprs):
        return self.bind(**constexprs)(grid, *args)


class Bound:
    """One kernel with fixed constexprs; compiled kernels keyed by device and argument specs."""

    __slots__ = ("launcher", "constexprs", "compiled")

    def __init__(self, launcher: Launcher, constexprs: dict):
        self.launcher = launcher
        self.constexprs = constexprs
        self.compiled: dict = {}

    def __call__(self, grid, *args):
        lau = self.launcher
        if not lau.fast or callable(grid):
            if _current_device is not None and not _all_on(_current_device(), args):
                return _on_tensors_device(self, (grid,), args)
            return _launch_normally(lau.kernel, grid, args, self.constexprs)
        device = _current_device()
        key = [device]
        values: list = []
        try:
            known = _append_specs(key, values, args, device)
        except _Elsewhere:
            return _on_tensors_device(self, (grid,), args)
        if not known:  # a type the key does not know: Triton's own path
            lau.fast = False
            if not _all_on(device, args):
                return _on_tensors_device(self, (grid,), args)
            return _launch_normally(lau.kernel, grid, args, self.constexprs)
        key = tuple(key)
        entry = self.compiled.get(key)
        if entry is None:
            kernel = _launch_normally(lau.kernel, grid, args, self.constexprs)
            if kernel is not None and lau.fast and _compiling_thread is None and _hooks_unset():
                # the constexprs are fixed, so the trailing arguments are too
                tail = tuple(self.constexprs[name] if name in self.constexprs else lau.defaults.get(name)
                             for name in lau.params[len(args):])
                self.compiled[key] = (*_launch_entry(kernel), tail)
            return None
        if _compiling_thread is not None or not _hooks_unset():
            # a profiler hooked launches after we cached (let Triton call it), or compile_only()
            return _launch_normally(lau.kernel, grid, args, self.constexprs)
        run, middle, tail = entry
        try:
            run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                _current_stream(device), *middle, *values, *tail)
        except TypeError:
            # this Triton's launcher wants other arguments: use the normal path from now on
            lau.fast = False
            lau.kernel[grid](*args, **self.constexprs)

    def prepare(self, grid, tail=()) -> Prepared:
        """This launch with its grid and trailing arguments fixed (a plan's integers).

        ``prepared(*head)`` launches like ``bound(grid, *head, *tail)``; what Triton
        specializes the tail on is worked out here once instead of at every call (about
        0.3 us per integer argument in CPython).
        """
        return Prepared(self, grid, tail)

    def prepare_described(self, grid, tail, described) -> DescribedLaunch:
        """Like ``prepare``, for a kernel whose first ``len(described)`` arguments are tensor
        descriptors of fixed ``(shape, strides, block_shape)`` (a GEMM plan's operands):
        ``launch(*tensors, *rest)`` passes those tensors, and only their addresses vary."""
        return DescribedLaunch(Prepared(self, grid, tail), described)


class Prepared:
    """A :class:`Bound` launch whose grid and trailing arguments are fixed; see ``Bound.prepare``."""

    __slots__ = ("bound", "grid", "tail", "tail_values", "tail_key", "dims", "compiled", "direct")

    def __init__(self, bound: Bound, grid, tail):
        self.bound = bound
        self.grid = grid
        self.tail = tuple(tail)
        key: list = []
        values: list = []
        # None: this launch always takes the Bound's path (a grid function, an odd tail)
        ok = not callable(grid) and _append_specs(key, values, self.tail)
        self.tail_key = tuple(key) if ok else None
        self.tail_values = tuple(values)  # as the compiled kernel takes them (tensors as addresses)
        self.dims = None if callable(grid) else (*grid, 1, 1)[:3]
        self.compiled: dict = {}  # (device, specs of the head) -> _Ready
        self.direct = None  # for ``planned``: (device, _Ready); False: never

    def __call__(self, *head):
        bound = self.bound
        lau = bound.launcher
        if not lau.fast or self.tail_key is None:
            return bound(self.grid, *head, *self.tail)
        device = _current_device()
        key = [device]
        values: list = []
        try:
            known = _append_specs(key, values, head, device)
        except _Elsewhere:
            return _on_tensors_device(self, (), head, self.tail)
        if not known:
            return bound(self.grid, *head, *self.tail)
        key = tuple(key)
        ready = self.compiled.get(key)
        if ready is None or _compiling_thread is not None or not _hooks_unset():
            # the Bound compiles (or finds) the kernel; its key is this key plus the tail's
            result = bound(self.grid, *head, *self.tail)
            if ready is None:
                entry = bound.compiled.get(key + self.tail_key)
                if entry is not None:
                    self.compiled[key] = _Ready(entry, self.dims, self.tail_values)
            return result
        self._run(ready, device, values, head)

    def planned(self, *head):
        """``self(*head)`` for a caller whose plan fixes what Triton specializes the head on,
        but for the tensors' addresses: every head argument is, at each call, a tensor of
        one dtype (the plan's key holds the dtypes), None, or a float.

        Only the tensors' device and 16-byte alignment are checked here; building and
        hashing the full key costs about 1 us more per launch on an H100 host, a tenth of
        a tiny native op's whole call. Plans keyed by their inputs' dtypes keep this bound
        method as their launch (norms, softmax, reductions, embedding, cat).
        """
        direct = self.direct
        if direct and _compiling_thread is None:
            device = _current_device()
            if device == direct[0] and _hooks_unset():
                values: list = []
                bits = 0
                for a in head:
                    if isinstance(a, _Tensor):
                        if a.get_device() != device:
                            break
                        ptr = a.data_ptr()
                        bits |= ptr
                        values.append(ptr)
                    else:
                        values.append(a)
                else:
                    if not bits & 15:
                        return self._run(direct[1], device, values, head)
        self(*head)
        if direct is None and self.compiled:
            self._find_direct(head)

    def _find_direct(self, head):
        # only where nothing in the head specializes on a value: aligned tensors, None, floats
        device = _current_device()
        for a in head:
            if isinstance(a, _Tensor):
                if a.get_device() != device or a.data_ptr() & 15:
                    return  # perhaps at a later call
            elif a is not None and type(a) is not float:
                self.direct = False  # a caller outside the contract: the full path, always
                return
        key = [device]
        if _append_specs(key, [], head, device):
            ready = self.compiled.get(tuple(key))
            if ready is not None:
                self.direct = (device, ready)

    def _run(self, ready, device, values, head):
        """The compiled kernel's launch on the current stream, with the head's values."""
        stream = _current_stream(device)
        at, call = ready.bound
        if at != stream:
            call = ready.on(stream)
        try:
            call(*values, *ready.tail)
        except TypeError:
            self._launch_normally_from_now_on(head)

    def _launch_normally_from_now_on(self, head):
        """This Triton's compiled launcher wants other arguments: Triton's own path, always."""
        self.direct = None
        bound = self.bound
        bound.launcher.fast = False
        bound.launcher.kernel[self.grid](*head, *self.tail, **bound.constexprs)


class _Ready:
    """A compiled kernel's launch for one :class:`Prepared`: ``ready.on(stream)(*head, *ready.tail)``.

    ``on`` binds the C launch function to the grid, the stream, the kernel's handle and
    metadata (``functools.partial``), so that a launch spreads two sequences into the call
    instead of five (on H100 hosts, tiny add: from 0.6 us saved to 0.15 us lost per launch
    in three runs, within their noise). It is bound again when the current stream changes.
    """

    __slots__ = ("entry", "dims", "tail", "bound")

    def __init__(self, entry, dims, tail_values):
        run, middle, consts = entry
        self.entry = entry  # the Bound's (run, middle, consts)
        self.dims = dims
        self.tail = (*tail_values, *consts)
        self.bound = (None, None)  # (stream, bound launch): one tuple, swapped whole across threads

    def on(self, stream):
        run, middle, _consts = self.entry
        call = functools.partial(run, *self.dims, stream, *middle)
        self.bound = (stream, call)
        return call


class DescribedLaunch:
    """A :class:`Prepared` launch whose leading arguments are tensor descriptors built from
    per-call tensors; see ``Bound.prepare_described``.

    Building the host descriptors at each call, Triton then encoding each into a CUtensorMap
    (``cuTensorMapEncodeTiled``), costs several microseconds per GEMM. Here, where Triton's
    launcher is the known tensor-descriptor wrapper (see ``_cached_descriptors``), each
    operand's encoded map is kept per base address (the rest is fixed), and the C launch
    function is called with the maps in place; elsewhere descriptors are built per call.
    """

    __slots__ = ("prepared", "described", "fast")

    def __init__(self, prepared: Prepared, described):
        self.prepared = prepared
        self.described = tuple(tuple(d) for d in described)  # (shape, strides, block_shape) each
        self.fast: dict = {}  # (device, specs of the other head arguments) -> (run, middle, tail, encoders)

    def __call__(self, *head):
        k = len(self.described)
        prepared = self.prepared
        if prepared.bound.launcher.fast and prepared.tail_key is not None:
            device = _current_device()
            key = [device]
            values: list = []
            try:
                known = _append_specs(key, values, head[k:], device)
                for t in head[:k]:
                    if t.get_device() != device:
                        raise _Elsewhere
            except _Elsewhere:
                return _on_tensors_device(self, (), head, prepared.tail)
            if known:
                fast = self.fast.get(tuple(key))
                if fast and _compiling_thread is None and _hooks_unset():
                    run, middle, tail, encoders = fast
                    maps: list = []
                    for t, (cache, encode) in zip(head, encoders):
                        expanded = cache.get(t.data_ptr())
                        maps += expanded if expanded is not None else encode(t)
                    run(*prepared.dims, _current_stream(device), *middle, *maps, *values, *tail)
                    return
                if fast is None:
                    return self._first(key, head)
        prepared(*self._descriptors(head), *head[k:])  # False: no fast entry for this launcher

    def _descriptor(self, j: int, t):
        shape, strides, block = self.described[j]
        return _TensorDescriptor(t, list(shape), list(strides), list(block))

    def _descriptors(self, head):
        return [self._descriptor(j, t) for j, t in enumerate(head[:len(self.described)])]

    def _first(self, key, head):
        """The normal launch (it compiles); then, where the launcher allows, the fast entry."""
        k = len(self.described)
        descriptors = self._descriptors(head)
        prepared = self.prepared
        prepared(*descriptors, *head[k:])
        full_key = [key[0]]
        _append_specs(full_key, [], descriptors)
        ready = prepared.compiled.get(tuple(full_key) + tuple(key[1:]))
        if ready is None:  # not compiled through the lean path (a hook was set): next call again
            return
        entry = ready.entry
        parts = getattr(entry[0], "descriptor_parts", None)
        if parts is None or parts[1] != list(range(k)):  # not the known wrapper, or other descriptors
            self.fast[tuple(key)] = False
            return
        raw, _positions, expand = parts
        _wrapper, middle, consts = entry

        def encoder(j):
            cache: dict = {}  # base address -> expanded arguments (a plan sees a few)

            def encode(t):
                if len(cache) >= 64:
                    cache.clear()
                expanded = cache[t.data_ptr()] = expand(j, self._descriptor(j, t))
                return expanded
            return cache, encode

        self.fast[tuple(key)] = (raw, middle, (*prepared.tail_values, *consts), [encoder(j) for j in range(k)])


def _launch_entry(kernel):
    """``(run, middle)``: ``run(gx, gy, gz, stream, *middle, *kernel_args)`` launches ``kernel``.

    Normally ``run`` is the compiled kernel's launcher object and ``middle`` its function
    handle, metadata and (unset) launch hooks. Where that launcher's ``__call__`` is a form
    known to do nothing but pass scratch buffers on to its C launch function, and this
    kernel needs no scratch, ``run`` is that C function itself: the Python frame in
    between costs about 1 us per launch, a tenth of a tiny op's whole native call.
    """
    run = kernel.run
    if (_scratch_forwarding(type(run)) and getattr(run, "global_scratch_size", 1) == 0
            and getattr(run, "profile_scratch_size", 1) == 0):
        # the known form calls launch(gx, gy, gz, stream, function, cooperative, pdl,
        # global_scratch, profile_scratch, metadata, launch_metadata, enter_hook, exit_hook, *args)
        return _cached_descriptors(run.launch), (kernel.function, run.launch_cooperative_grid, run.launch_pdl,
                                                 None, None, kernel.packed_metadata, None, None, None)
    return run, (kernel.function, kernel.packed_metadata, None, None, None)


# sha256 of the whitespace-free source of Triton's ``wrap_handle_tensordesc.<locals>.inner``
# (replaces each host TensorDescriptor argument by ``make_tensordesc_arg(arg, meta)`` and
# calls the C launch function) and of the ``make_tensordesc_arg`` it calls (a CUtensorMap
# encoded from the base address, shape, strides and padding, then shape and strides): Triton 3.6.
_DESCRIPTOR_WRAPPERS = frozenset({
    "c5e6a153127769b9046f13b26c79d1097ba5c4e2989e563672ec649cc0d68b1f",
})
_DESCRIPTOR_ENCODERS = frozenset({
    "5cf6d92d5613960a4792424a9fa7bfa7bb9ff966b7b3b09a896039ce945babbb",
})


def _source_digest(fn) -> str:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(re.sub(r"\s+", "", source).encode()).hexdigest()


def _cached_descriptors(launch):
    """``launch``, or where it is Triton 3.6's tensor-descriptor wrapper, an equivalent that
    keeps each descriptor's expansion (its encoded CUtensorMap) per (base address, shape,
    strides) instead of encoding it again at every launch.

    A TMA GEMM called again on the same weight, or on activations the caching allocator
    hands back at the same address, then skips ``cuTensorMapEncodeTiled`` and the wrapper's
    Python loop over every argument (8-10 us per launch on an H100 host). The encoded map
    depends on nothing else: the element type, block shape and swizzle are the compiled
    kernel's, fixed for this launcher.
    """
    cells = dict(zip(getattr(getattr(launch, "__code__", None), "co_freevars", ()), launch.__closure__ or ())) \
        if callable(launch) and getattr(launch, "__closure__", None) else {}
    if {"launcher", "tensordesc_indices", "tensordesc_meta"} - cells.keys():
        return launch
    encode = launch.__globals__.get("make_tensordesc_arg")
    base = launch.__globals__.get("_BASE_ARGS_FORMAT_LEN")
    if (not isinstance(base, int) or encode is None or _source_digest(launch) not in _DESCRIPTOR_WRAPPERS
            or _source_digest(encode) not in _DESCRIPTOR_ENCODERS):
        return launch
    raw = cells["launcher"].cell_contents
    positions = sorted(cells["tensordesc_indices"].cell_contents)
    metas = list(cells["tensordesc_meta"].cell_contents)
    if len(metas) != len(positions):
        return launch
    expanded_by_key: dict = {}
    last = len(positions) - 1

    def expand(j, d):
        """The arguments descriptor ``d`` at descriptor position ``j`` expands to."""
        key = (j, d.base.data_ptr(), *d.shape, *d.strides, d.padding)
        expanded = expanded_by_key.get(key)
        if expanded is None:
            if len(expanded_by_key) >= 256:  # a model reuses a few weights and activation slots
                expanded_by_key.clear()
            expanded = expanded_by_key[key] = encode(d, metas[j])
        return expanded

    def launch_with_cached_descriptors(*args):
        flat = list(args)
        for j in range(last, -1, -1):  # from the back: earlier positions stay valid
            at = base + positions[j]
            flat[at:at + 1] = expand(j, flat[at])
        return raw(*flat)

    # for DescribedLaunch: the C function, where descriptors go, and their expansion
    launch_with_cached_descriptors.descriptor_parts = (raw, positions, expand)
    return launch_with_cached_descriptors


# sha256 of the whitespace-free source of launcher ``__call__`` methods that only allocate
# the global and profile scratch buffers (None when their size is 0) and then call
# ``self.launch(gridX, gridY, gridZ, stream, function, self.launch_cooperative_grid,
# self.launch_pdl, global_scratch, profile_scratch, *args)``: Triton 3.6's CudaLauncher.
# A launcher whose source differs in any way keeps the normal call.
_SCRATCH_FORWARDING_CALLS = frozenset({
    "0ff2b3219ec9f5067def7f5b72cf4ed0f1b544e98655c5e548c7e933e3ab3a19",
})
_FORWARDING: dict = {}  # launcher class -> bool


def _scratch_forwarding(cls) -> bool:
    known = _FORWARDING.get(cls)
    if known is None:
        known = _FORWARDING[cls] = _source_digest(getattr(cls, "__call__", None)) in _SCRATCH_FORWARDING_CALLS
    return known


def _append_specs(key: list, values: list, args, device=None) -> bool:
    """Append to ``key`` what Triton specializes each of ``args`` on (``_spec``, written out
    for the common types: this runs at every launch), and to ``values`` the argument as the
    compiled kernel takes it; False at a type it does not know. With ``device`` given
    (the current one), raises ``_Elsewhere`` at a tensor on any other device.

    A tensor goes to the compiled kernel as its address: Triton's launcher takes a Python
    int as a device pointer as it is, where for a tensor it calls ``data_ptr()`` again and
    asks the driver to check the address (``cuPointerGetAttribute``), for every tensor at
    every launch. The address is read here anyway, for the alignment in the key; the
    device check that Triton's address check stood for is ``get_device()``.
    """
    kappend = key.append
    vappend = values.append
    for a in args:
        t = type(a)
        if t is _Tensor:
            if a.get_device() != device and device is not None:
                raise _Elsewhere
            ptr = a.data_ptr()
            kappend(a.dtype)
            kappend(ptr & 15 == 0)
            vappend(ptr)
            continue
        if t is int:
            kappend(1 if a == 1 else 2 + (a & 15 == 0) + 2 * (_INT32_MIN <= a <= _INT32_MAX))
        elif t is float:
            kappend(float)
        elif t is _TensorDescriptor:
            # Triton specializes a host descriptor on its dtype and block shape; the
            # launcher builds the TMA descriptor from shape and strides at each call
            if a.base.get_device() != device and device is not None:
                raise _Elsewhere
            kappend((t, a.base.dtype, tuple(a.block_shape), getattr(a, "padding", None)))
        elif a is None or t is bool or isinstance(a, _Tensor):
            if t is not bool and a is not None and a.get_device() != device and device is not None:
                raise _Elsewhere
            kappend(_spec(a))  # a tensor subclass (a Parameter): one (dtype, aligned) entry, passed as it is
        else:
            return False
        vappend(a)
    return True


class _Elsewhere(Exception):
    """Raised by ``_append_specs`` at a tensor off the current device (not an error yet)."""


def _device_of(a):
    """The device index of a tensor or host descriptor argument (-1: CPU), None for anything else."""
    if isinstance(a, _Tensor):
        return a.get_device()
    if _TensorDescriptor is not None and type(a) is _TensorDescriptor:
        return a.base.get_device()
    return None


def _all_on(device: int, args) -> bool:
    return all(d is None or d == device for d in map(_device_of, args))


def _on_tensors_device(launch, lead, args, fixed=()):
    """``launch(*lead, *args)`` with the current device switched to the one GPU that holds
    every tensor in ``args`` (and in a prepared launch's ``fixed`` tail). Tensors on several
    devices, or on the CPU, raise NotOnCurrentDevice (host functions then run torch's
    kernel, which raises its own error). While a tuner times candidates it raises too,
    with the device: the tuner's timing belongs on that device's streams, so it tunes
    again with that device current."""
    devices = sorted({d for d in map(_device_of, (*args, *fixed)) if d is not None})
    if len(devices) != 1 or devices[0] < 0:
        names = ", ".join("cpu" if d < 0 else f"cuda:{d}" for d in devices)
        raise NotOnCurrentDevice(f"gemsops: a kernel got tensors on {names}; it runs on one GPU")
    device = devices[0]
    if _tuner.tuning():
        raise NotOnCurrentDevice(f"gemsops: tuning on cuda:{device}", device)
    previous = _current_device()
    _set_device(device)
    try:
        return launch(*lead, *args)
    finally:
        _set_device(previous)


_Tensor = torch.Tensor

try:
    from triton.tools.tensor_descriptor import TensorDescriptor as _TensorDescriptor
except ImportError:  # a Triton without host descriptors
    _TensorDescriptor = None


if VENDOR is not None and VENDOR.device_type == "cuda":
    _current_device = torch._C._cuda_getDevice
    _current_stream = torch._C._cuda_getCurrentRawStream
    _set_device = torch._C._cuda_setDevice
else:
    _current_device = _current_stream = _set_device = None


try:
    from triton import knobs as _knobs
except ImportError:  # a Triton without knobs: always the normal launch path
    _knobs = None
_HookChain = type(_knobs.runtime.launch_enter_hook) if _knobs is not None else None
if _HookChain is not None and _HookChain.__name__ != "HookChain":
    _HookChain = None  # a plain callable or None there: only None counts as unset


_compiling_thread: int | None = None  # the thread inside compile_only(), if any
_compiling_kernels: frozenset | None = None  # ids of the kernels it only compiles (None: all)
_compile_only_lock = threading.Lock()


@contextlib.contextmanager
def compile_only(kernels=None):
    """Within this block, launches of ``kernels`` (every kernel when None) from the calling
    thread compile their kernel and run nothing (``JITFunction.warmup``); other kernels,
    and every launch from other threads, run as usual.

    The tuner runs every candidate once this way inside a ``triton.AsyncCompileMode``, so
    that all candidates compile at the same time in a thread pool before any is timed. It
    names its own kernels: a candidate's run may launch others whose effect it needs (a
    split-K lock buffer zeroed through gems' fill when gems is enabled), and those must run.
    Not reentrant: a nested block raises RuntimeError.
    """
    global _compiling_thread, _compiling_kernels
    with _compile_only_lock:
        if _compiling_thread is not None:
            raise RuntimeError("gemsops: compile_only() is already active")
        _compiling_kernels = None if kernels is None else frozenset(id(k) for k in kernels)
        _compiling_thread = threading.get_ident()
    try:
        yield
    finally:
        _compiling_thread = None
        _compiling_kernels = None


def compiling_only() -> bool:
    """True inside :func:`compile_only` in the calling thread."""
    return _compiling_thread is not None and _compiling_thread == threading.get_ident()


def _launch_normally(kernel, grid, args, constexprs):
    """Triton's own launch, ``kernel[grid](*args, **constexprs)``; inside
    :func:`compile_only` (this thread, one of its kernels) its ``warmup``: compiled, not run."""
    if compiling_only() and (_compiling_kernels is None or id(kernel) in _compiling_kernels):
        return kernel.warmup(*args, grid=grid, **constexprs)
    return kernel[grid](*args, **constexprs)


def _hooks_unset() -> bool:
    # Triton <= 3.3 keeps a plain callable or None; later versions an always-present
    # HookChain whose ``calls`` list is empty until a profiler adds a hook. Runs on every
    # launch, hence written out rather than looped.
    if _knobs is None:
        return False
    runtime = _knobs.runtime
    enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
    return ((enter is None or (type(enter) is _HookChain and not enter.calls))
            and (leave is None or (type(leave) is _HookChain and not leave.calls)))


_LAUNCHERS: dict = {}  # id(kernel) -> (kernel, Launcher): hashing a JITFunction takes a lock


def launcher(kernel) -> Launcher:
    """The shared :class:`Launcher` of ``kernel``: ``launcher(k)[grid](...)`` for ``k[grid](...)``."""
    entry = _LAUNCHERS.get(id(kernel))
    if entry is None or entry[0] is not kernel:
        entry = _LAUNCHERS[id(kernel)] = (kernel, Launcher(kernel))
    return entry[1]


class Plans(dict):
    """Launch plans by call signature, for host functions whose callers repeat a few.

    A plan holds what one call signature launches (bound kernels, grids, integer
    arguments, output shapes) so that the next call with that signature skips the checks,
    layout work and tuner lookups and goes straight to allocation and launch. A model
    repeats a handful of signatures per op; the memo is bounded anyway and starts over
    when full. Nothing is kept while a CUDA graph is being captured, nor inside another
    tuner's compile pass (``compile_only``): a config chosen then is a one-off default,
    not the tuned choice.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int = 4096):
        super().__init__()
        self.limit = limit

    def keep(self, key, plan):
        """Remember ``plan`` for ``key`` (unless capturing or compiling) and return it."""
        if not _tuner.capturing() and not compiling_only():
            if len(self) >= self.limit:
                self.clear()
            self[key] = plan
        return plan

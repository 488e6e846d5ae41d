"""The pointwise op generator: a scalar Triton function becomes a full elementwise op.

    @triton.jit
    def _add(a, b):
        return a + b

    add = Pointwise("add", _add)            # add(x, y), add(x, 2.0), add(x, y, out=x)

What it handles, once for every pointwise op:
- Type promotion exactly as PyTorch does (``torch._prims_common.elementwise_dtypes``,
  cached per input signature): Python scalars and 0-d tensors are "weak", fp16/bf16 are
  computed in fp32 (opmath) and stored in the result dtype.
- Broadcasting, any strides (non-contiguous, expanded, 0-stride), 0-d and empty tensors.
  Dims that are contiguous with respect to each other in every operand are merged
  first; what remains may have up to ``MAX_RANK`` dims, else torch's kernel runs.
- Contiguous same-shape operands take a flat 1-D fast path with little host work.
- ``out=`` and in-place (``out`` is the first input), int64 offsets past 2**31 elements.
- Up to ``MAX_INPUTS`` inputs; with ``out`` given, no tensor input is needed (``fill_``).
- bf16 results are converted through fp32 and rounded to nearest even, also under the
  interpreter (which truncates, and mis-converts integers and fp64 to bf16).

Anything else raises :class:`Unsupported`, which the host function turns into a call of
torch's own kernel. ``declare_pointwise`` declares one op family's aten overloads
(functional, ``out=``, in-place) over a single ``run`` function.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as Promotion  # noqa: F401
from torch._prims_common import elementwise_dtypes

from ..runtime import VENDOR, Plans, Unsupported, declare, fallback, launcher, native
from ..runtime import on_device as _on_device
from ..runtime.registry import aten_overload
from ._common import INDEX_LIMIT, TL_DTYPE, allocation_stand_in, broadcast_shapes, cdiv, is_dense, kernel_dtype_ok

MAX_RANK = 5
MAX_INPUTS = 4
BLOCK = 1024

_ROUND_BF16_BY_HAND = tl.constexpr(VENDOR is not None and VENDOR.interpreter)
# contiguous launches of at least this many elements run ``Pointwise.unroll`` blocks per
# program (H100, bf16: gelu 16384x8192 203 -> 188 us with four, native 192; at 4096x4096
# four were 0.6 us slower than one); small under the interpreter, so that CI runs that path
UNROLL_FROM = 4 * BLOCK if VENDOR is not None and VENDOR.interpreter else 2**25

# operand kinds (constexpr): how the kernel reads an input
SCALAR, TENSOR, SINGLE = 0, 1, 2  # Python number / full tensor / one element broadcast everywhere

_DEVICE_TYPE = VENDOR.device_type if VENDOR is not None else None
_Tensor = torch.Tensor
_empty_like = torch.empty_like


@triton.jit
def _load(ptr, offs, mask, KIND: tl.constexpr, COMPUTE: tl.constexpr):
    if KIND == 0:
        v = ptr
    elif KIND == 2:
        v = tl.load(ptr)
    else:
        v = tl.load(ptr + offs, mask=mask)
    if COMPUTE is not None:
        if COMPUTE == tl.bfloat16:
            v = _to_bf16(v)
        else:
            v = tl.cast(v, COMPUTE)  # tl.cast, not .to: a scalar argument equal to 1 arrives as a constexpr
    return v


@triton.jit
def _to_bf16(v):
    """To bf16 through fp32, as torch converts; rounded to nearest even also under the interpreter."""
    v = tl.cast(v, tl.float32)  # the interpreter mis-converts integers and fp64 to bf16 directly
    if _ROUND_BF16_BY_HAND:
        # the interpreter truncates fp32 -> bf16: round the bits to nearest even here
        bits = v.to(tl.uint32, bitcast=True)
        bits = bits + (((bits >> 16) & 1) + 0x7FFF)
        r = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        r = tl.where(v != v, v.to(tl.bfloat16), r)
    else:
        r = tl.cast(v, tl.bfloat16)
    return r


@triton.jit
def _for_store(r, out_ptr, RES: tl.constexpr):
    if RES is not None:  # out= of another dtype: round to the result dtype first, as torch does
        r = tl.cast(r, RES)
    if out_ptr.dtype.element_ty == tl.bfloat16:
        r = _to_bf16(r)
    elif out_ptr.dtype.element_ty == tl.int1:
        # Triton (up to 3.6 at least) stores into a bool pointer through an int8 cast, so 0.5
        # would land as 0 and 2 as the byte 2; C's conversion to bool is ``!= 0`` (NaN true)
        r = tl.cast(r, tl.int1)
    elif out_ptr.dtype.element_ty == tl.uint8:
        # torch converts to uint8 through int64 (c10's static_cast_with_inter_type), so -1.5
        # wraps to 255; a direct float->uint8 cast saturates to 0 on the GPU. For integer
        # inputs the detour is the plain truncation.
        r = tl.cast(tl.cast(r, tl.int64), tl.uint8)
    return r


@triton.jit
def _apply(FN: tl.constexpr, NIN: tl.constexpr, a, b, c, d):
    if NIN == 1:
        r = FN(a)
    elif NIN == 2:
        r = FN(a, b)
    elif NIN == 3:
        r = FN(a, b, c)
    else:
        r = FN(a, b, c, d)
    return r


@triton.jit
def _pointwise_flat_kernel(
    out_ptr, x0, x1, x2, x3, n,
    FN: tl.constexpr, NIN: tl.constexpr,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,
    RES: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr, UNROLL: tl.constexpr,
):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    for j in tl.static_range(UNROLL):
        offs = (pid * UNROLL + j) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        r = _apply(FN, NIN, _load(x0, offs, mask, K0, C0), _load(x1, offs, mask, K1, C1),
                   _load(x2, offs, mask, K2, C2), _load(x3, offs, mask, K3, C3))
        tl.store(out_ptr + offs, _for_store(r, out_ptr, RES), mask=mask)


@triton.jit
def _strided_offset(i0, i1, i2, i3, i4, st0, st1, st2, st3, st4, RANK: tl.constexpr):
    off = i0 * st0
    if RANK >= 2:
        off += i1 * st1
    if RANK >= 3:
        off += i2 * st2
    if RANK >= 4:
        off += i3 * st3
    if RANK >= 5:
        off += i4 * st4
    return off


@triton.jit
def _load_strided(ptr, i0, i1, i2, i3, i4, s0, s1, s2, s3, s4, mask, KIND: tl.constexpr,
                  COMPUTE: tl.constexpr, RANK: tl.constexpr):
    offs = i0  # unused unless KIND is TENSOR
    if KIND == 1:
        offs = _strided_offset(i0, i1, i2, i3, i4, s0, s1, s2, s3, s4, RANK)
    return _load(ptr, offs, mask, KIND, COMPUTE)


@triton.jit
def _pointwise_strided_kernel(
    out_ptr, x0, x1, x2, x3, n,
    d1, d2, d3, d4,  # sizes of dims 1..4 (dim 0's size is implied by n)
    o0, o1, o2, o3, o4,
    a0, a1, a2, a3, a4,
    b0, b1, b2, b3, b4,
    c0, c1, c2, c3, c4,
    e0, e1, e2, e3, e4,
    FN: tl.constexpr, NIN: tl.constexpr,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,
    RES: tl.constexpr, RANK: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    # multi-index, dim RANK-1 innermost; unused dims stay 0
    i4 = idx * 0
    i3 = idx * 0
    i2 = idx * 0
    i1 = idx * 0
    rest = idx
    if RANK >= 5:
        i4 = rest % d4
        rest = rest // d4
    if RANK >= 4:
        i3 = rest % d3
        rest = rest // d3
    if RANK >= 3:
        i2 = rest % d2
        rest = rest // d2
    if RANK >= 2:
        i1 = rest % d1
        rest = rest // d1
    i0 = rest
    a = _load_strided(x0, i0, i1, i2, i3, i4, a0, a1, a2, a3, a4, mask, K0, C0, RANK)
    b = _load_strided(x1, i0, i1, i2, i3, i4, b0, b1, b2, b3, b4, mask, K1, C1, RANK)
    c = _load_strided(x2, i0, i1, i2, i3, i4, c0, c1, c2, c3, c4, mask, K2, C2, RANK)
    d = _load_strided(x3, i0, i1, i2, i3, i4, e0, e1, e2, e3, e4, mask, K3, C3, RANK)
    r = _apply(FN, NIN, a, b, c, d)
    tl.store(out_ptr + _strided_offset(i0, i1, i2, i3, i4, o0, o1, o2, o3, o4, RANK), _for_store(r, out_ptr, RES),
             mask=mask)


_launch_flat = launcher(_pointwise_flat_kernel)
_launch_strided = launcher(_pointwise_strided_kernel)


def _coalesce(shape, strides_list):
    """Merge dims that are contiguous with respect to each other in every operand."""
    dims = [(s, [st[i] for st in strides_list]) for i, s in enumerate(shape) if s != 1]
    if not dims:
        return [1], [[0] for _ in strides_list]
    merged = [dims[0]]
    for size, sts in dims[1:]:
        psize, psts = merged[-1]
        if all(ps == s * size for ps, s in zip(psts, sts)):
            merged[-1] = (psize * size, sts)
        else:
            merged.append((size, sts))
    return [m[0] for m in merged], [[m[1][k] for m in merged] for k in range(len(strides_list))]


def _span(t) -> int:
    """Largest element offset a view reaches from its data pointer."""
    return sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))


def needs_int64(out, args) -> bool:
    """True when an element index or offset of ``out`` or a tensor in ``args`` may pass int32."""
    if out.numel() > INDEX_LIMIT or _span(out) > INDEX_LIMIT:
        return True
    return any(isinstance(a, _Tensor) and _span(a) > INDEX_LIMIT for a in args)


class Pointwise:
    """An elementwise op over 1 to 4 inputs built from a scalar ``@triton.jit`` function.

    ``promotion`` is PyTorch's type-promotion kind for the op. ``promote`` lists the
    input positions that take part in promotion (default: all); the others are passed to
    ``fn`` as loaded (a ``where`` condition, an ``alpha``). With ``promote=()`` and no
    ``out_dtype`` the op is a casting store into ``out`` (``copy_``, ``fill_``): the
    iteration shape and the dtype are ``out``'s, inputs broadcast to it. ``out_dtype`` forces the result dtype
    (e.g. ``torch.bool``) when the op's rule is not a promotion kind. ``compute_dtype``
    forces the dtype ``fn`` computes in. ``variants`` maps a computation dtype to another
    scalar function for it (``bool`` addition is ``or``). ``unroll``: blocks per program of
    the contiguous kernel on large tensors (``UNROLL_FROM``), for functions costly enough
    that with one block per program the loads wait on the math (erf, tanh).
    """

    def __init__(self, name, fn, promotion=Promotion.DEFAULT, promote=None, out_dtype=None,
                 compute_dtype=None, variants=None, unroll=1):
        self.name = name
        self.fn = fn
        self.unroll = unroll
        self.variants = variants or {}
        self.promotion = promotion
        self.promote = None if promote is None else tuple(promote)
        self.out_dtype = out_dtype
        self.compute_dtype = compute_dtype
        self._plans: dict = {}  # input signature -> plan (see ``_plan``)
        # dtype, (dtype, dtype) or (dtype, float): the plan of one or two contiguous tensors of
        # one shape, or of a tensor and a float, as (result dtype, prepared flat launches by
        # size, flat Bounds, padding); filled by the first such call without ``out``, then
        # read first at every call (``__call__``)
        self._lean: dict = {}
        # one tensor, two tensors, or a tensor and a float, in a layout the lean path does not
        # take (broadcasts, slices) and seen before without ``out``: (dtypes, shapes and
        # strides) -> (stand-in of the contiguous output, launch plan), read right after
        # ``_lean`` (``__call__``); filled from ``_CALL_PLANS``, whose checks it skips
        self._strided = Plans(256)

    def _plan(self, key, args):
        promoted = args if self.promote is None else [args[i] for i in self.promote]
        if promoted:
            compute, result = elementwise_dtypes(*promoted, type_promotion_kind=self.promotion)
        else:
            compute, result = None, None
        if self.compute_dtype is not None:
            compute = self.compute_dtype
        if self.out_dtype is not None:
            result = self.out_dtype
        ok = (compute is None or kernel_dtype_ok(compute)) and (result is None or kernel_dtype_ok(result)) and all(
            kernel_dtype_ok(a.dtype) for a in args if isinstance(a, _Tensor))
        compute_tl = TL_DTYPE.get(compute)
        casts = tuple(compute_tl if (self.promote is None or i in self.promote) else None
                      for i in range(len(args)))
        # for the fast path: operand kinds (full tensors; one-element tensors) and casts, padded
        pad = MAX_INPUTS - len(args)
        kinds = tuple(TENSOR if isinstance(a, _Tensor) else SCALAR for a in args) + (SCALAR,) * pad
        singles = tuple(SINGLE if k == TENSOR else k for k in kinds)
        fn = self.variants.get(compute, self.fn)
        c = casts + (None,) * pad
        # launches of the flat kernel for the lean path: full tensors, one element each, and
        # full tensors of at least UNROLL_FROM elements
        flat = tuple(_launch_flat.bind(FN=fn, NIN=len(args), K0=k[0], K1=k[1], K2=k[2], K3=k[3],
                                       C0=c[0], C1=c[1], C2=c[2], C3=c[3], RES=None, INT64=False, BLOCK=BLOCK,
                                       UNROLL=unroll)
                     for k, unroll in ((kinds, 1), (singles, 1), (kinds, self.unroll)))
        # flat launches prepared per element count (grid and integers fixed), a few per plan
        prepared: dict = {}
        # no argument that Triton specializes on its value (an int): launched by Prepared.planned
        planned = all(isinstance(a, _Tensor) or type(a) is float for a in args)
        plan = self._plans[key] = (compute, result, casts, ok, fn, flat, (0,) * pad, prepared, planned)
        return plan

    def _keep_strided(self, args, out_like, launch) -> None:
        """Let ``__call__`` find this call's layout plan first from now on (see ``_strided``)."""
        a = args[0]
        if len(args) == 1:
            key = (a.dtype, a.shape, a.stride())
        elif len(args) != 2 or type(a) is not _Tensor:
            return
        elif type(args[1]) is _Tensor:
            b = args[1]
            key = (a.dtype, b.dtype, a.shape, a.stride(), b.shape, b.stride())
        elif type(args[1]) is float:
            key = (a.dtype, float, a.shape, a.stride())
        else:
            return
        self._strided.keep(key, (out_like, launch))

    def dtypes(self, args) -> tuple[torch.dtype, torch.dtype]:
        """(compute dtype, result dtype) for these inputs, as PyTorch would choose."""
        key = tuple([(a.dtype, a.dim() == 0) if isinstance(a, _Tensor) else type(a) for a in args])  # a list: faster
        plan = self._plans.get(key) or self._plan(key, args)
        return plan[0], plan[1]

    def __call__(self, *args, out: torch.Tensor | None = None):
        """Compute ``fn`` elementwise over ``args`` (tensors or Python numbers)."""
        # the commonest calls of all, written out (each check saved is ~0.1 us): one or two
        # contiguous tensors of one shape on the device, or a tensor and a float (``x * y``,
        # ``silu(x)``, ``x + 1.0``), and the in-place form of two tensors (``x.add_(y)``)
        nargs = len(args)
        a = args[0] if nargs else None
        if type(a) is _Tensor and _on_device(a):
            lean = strided = None
            if nargs == 2:
                b = args[1]
                if type(b) is _Tensor:
                    if _on_device(b):
                        if a.shape == b.shape and a.is_contiguous() and b.is_contiguous():
                            lean = self._lean.get((a.dtype, b.dtype))
                        elif out is None:
                            strided = self._strided.get((a.dtype, b.dtype, a.shape, a.stride(), b.shape, b.stride()))
                elif type(b) is float:
                    if a.is_contiguous():
                        lean = self._lean.get((a.dtype, float))
                    elif out is None:
                        strided = self._strided.get((a.dtype, float, a.shape, a.stride()))
            elif nargs == 1:
                if a.is_contiguous():
                    lean = self._lean.get(a.dtype)
                elif out is None:
                    strided = self._strided.get((a.dtype, a.shape, a.stride()))
            if strided is not None:
                out_like, launch = strided
                if out_like.get_device() == a.get_device():
                    out = _empty_like(out_like)
                    launch.planned(out, *args)
                    return out
            elif lean is not None:
                result_dtype, prepared, flat, pad = lean
                n = a.numel()
                if out is None:
                    if n <= INDEX_LIMIT:
                        out = _empty_like(a) if a.dtype is result_dtype else _empty_like(a, dtype=result_dtype)
                        if n:
                            (prepared.get(n) or _prepare_flat(prepared, flat, pad, n)).planned(out, *args)
                        return out
                elif out is a and result_dtype is a.dtype and 0 < n <= INDEX_LIMIT:
                    # in place: a second tensor may be ``a`` itself, else must not overlap it
                    b = args[1] if nargs == 2 else None
                    if type(b) is not _Tensor or b is a or (
                            b.data_ptr() >= a.data_ptr() + n * a.element_size()
                            or a.data_ptr() >= b.data_ptr() + n * b.element_size()):
                        (prepared.get(n) or _prepare_flat(prepared, flat, pad, n)).planned(out, *args)
                        return out
        key = tuple([(a.dtype, a.dim() == 0) if isinstance(a, _Tensor) else type(a) for a in args])  # a list: faster
        plan = self._plans.get(key) or self._plan(key, args)
        compute, result_dtype, casts, ok, fn, flat, pad, prepared, planned = plan
        if not ok:
            raise Unsupported
        call_key = into_key = None
        if out is None and result_dtype is not None and compute != torch.float64:
            # the common case, kept lean: contiguous tensors of one shape on the device
            first = None
            for a in args:
                if isinstance(a, _Tensor):
                    if first is None:
                        first = a
                    elif a.shape != first.shape:
                        break
                    if not (a.is_contiguous() and _on_device(a)):
                        break
            else:
                if first is not None:
                    n = first.numel()
                    if n <= INDEX_LIMIT:
                        # much cheaper than torch.empty; the dtype argument alone costs ~0.2 us
                        out = _empty_like(first) if first.dtype == result_dtype else \
                            _empty_like(first, dtype=result_dtype)
                        if n:
                            launch = prepared.get(n) or _prepare_flat(prepared, flat, pad, n)
                            (launch.planned if planned else launch)(out, *args)
                        if len(args) == 1 and type(first) is _Tensor:
                            self._lean[first.dtype] = (result_dtype, prepared, flat, pad)
                        elif len(args) == 2 and type(args[0]) is _Tensor and type(args[1]) in (_Tensor, float):
                            b = args[1]
                            self._lean[(first.dtype, b.dtype if type(b) is _Tensor else float)] = (
                                result_dtype, prepared, flat, pad)
                        return out
            # next: layouts seen before (broadcasts, slices, transposes), planned once
            call_key = (id(plan), *[(a.shape, a.stride()) if isinstance(a, _Tensor) else type(a) for a in args])
            call = _CALL_PLANS.get(call_key)
            if call is not None:
                first = None
                for a in args:
                    if isinstance(a, _Tensor):
                        if not _on_device(a):
                            break
                        if first is None:
                            first = a
                else:
                    out_like, out_shape, out_stride, launch = call
                    if out_like is not None and out_like.get_device() == first.get_device():
                        out = torch.empty_like(out_like)
                        self._keep_strided(args, out_like, launch)
                    else:
                        out = torch.empty_strided(out_shape, out_stride, dtype=result_dtype, device=first.device)
                    launch.planned(out, *args)
                    return out
                call_key = None
        elif out is not None and compute != torch.float64:
            # in place and out= into a contiguous tensor of the result dtype, every tensor
            # operand contiguous and of out's shape: the flat launch, unless an operand
            # overlaps out other than by being it (the full path then decides)
            if out.dtype == result_dtype and out.is_contiguous() and _on_device(out):
                shape = out.shape
                n = out.numel()
                lo = out.data_ptr()
                hi = lo + n * out.element_size()
                for a in args:
                    if isinstance(a, _Tensor) and a is not out and (
                            a.shape != shape or not (a.is_contiguous() and _on_device(a))
                            or (a.data_ptr() < hi and lo < a.data_ptr() + n * a.element_size())):
                        break
                else:
                    if 0 < n <= INDEX_LIMIT:
                        launch = prepared.get(n) or _prepare_flat(prepared, flat, pad, n)
                        (launch.planned if planned else launch)(out, *args)
                        return out
            # in place and out= (add_, copy_, fill_, _to_copy's store): layouts seen before
            # launch as planned unless an input overlaps ``out`` other than by being it (the
            # full path then decides: torch errors or exact-alias in place)
            into_key = (id(plan), out.shape, out.stride(), out.dtype,
                        *[(a.shape, a.stride()) if isinstance(a, _Tensor) else type(a) for a in args])
            into = _INTO_PLANS.get(into_key)
            if into is not None and _on_device(out):
                launch, extents, out_extent = into
                lo = out.data_ptr()
                hi = lo + out_extent
                for a, extent in zip(args, extents):
                    if extent and (not _on_device(a) or (a is not out and a.data_ptr() < hi
                                                          and lo < a.data_ptr() + extent)):
                        break
                else:
                    launch.planned(out, *args)
                    return out
        tensors = [a for a in args if isinstance(a, _Tensor)]
        dev = _DEVICE_TYPE
        if not all(map(_on_device, tensors)):
            into_key = None
            # a CPU 0-d tensor next to device tensors is a scalar (torch allows that mix)
            if dev == "cpu" or not any(t.device.type == dev for t in tensors):
                raise Unsupported
            args = tuple(a.item() if isinstance(a, _Tensor) and a.dim() == 0 and a.device.type == "cpu"
                         else a for a in args)
            tensors = [a for a in args if isinstance(a, _Tensor)]
            if not all(map(_on_device, tensors)):
                raise Unsupported
            call_key = None  # the CPU scalar's value is now an argument: no call plan
        if out is not None and not _on_device(out):
            raise Unsupported
        if result_dtype is None:
            # a casting store into ``out`` (copy_, fill_): its shape and dtype rule
            if out is None or not kernel_dtype_ok(out.dtype):
                raise Unsupported
            shape = out.shape
            if any(t.shape != shape for t in tensors) and broadcast_shapes(
                    shape, *(t.shape for t in tensors)) != shape:
                raise Unsupported
            _check_out(out, shape, out.dtype, tensors)
            res = None
        else:
            shape = tensors[0].shape
            for t in tensors:
                if t.shape != shape:
                    shape = broadcast_shapes(*(t.shape for t in tensors))
                    break
            if out is None:
                out = _new_output(tensors, shape, result_dtype)
            else:
                _check_out(out, shape, result_dtype, tensors)
            res = None if out.dtype == result_dtype else TL_DTYPE[result_dtype]
        n = out.numel()
        if n == 0:
            return out
        if compute == torch.float64 and any(type(a) is float for a in args):
            # Triton passes Python floats as fp32: keep a float64 scalar in a 0-d tensor
            # (filled by torch's own kernel: no host-device copy, no sync)
            args = tuple(f64_scalar(a, out.device) if type(a) is float else a for a in args)
        launch = _general(fn, args, casts, out, shape, res)
        if call_key is not None:
            _CALL_PLANS.keep(call_key, (allocation_stand_in(out), out.shape, out.stride(), launch))
        elif into_key is not None:
            _INTO_PLANS.keep(into_key, (launch, tuple(_extent(a) for a in args), _extent(out)))
        return out


def _prepare_flat(prepared: dict, flat, pad, n: int):
    """The flat kernel's launch over ``n`` contiguous elements, kept in the plan's ``prepared``."""
    if len(prepared) >= 64:  # a model repeats a few sizes per op
        prepared.clear()
    bound = flat[1] if n == 1 else flat[2] if n >= UNROLL_FROM else flat[0]
    span = BLOCK * bound.constexprs["UNROLL"]
    launch = prepared[n] = bound.prepare(((n + span - 1) // span,), (*pad, n))
    return launch


# plan ids are stable keys: Pointwise objects are module-level and never drop a plan
_LAYOUT_PLANS = Plans()  # launch plans by op and operand layouts: models repeat a few layouts
# (Pointwise plan id, operand layouts) -> (zero-stride stand-in of a contiguous output or None,
# output shape, strides, launch plan)
_CALL_PLANS = Plans()
# (Pointwise plan id, out's layout and dtype, operand layouts) -> (launch plan, byte extent of
# each tensor operand (0 for numbers), out's byte extent)
_INTO_PLANS = Plans()


def _extent(a) -> int:
    """Bytes from a tensor's data pointer to the end of its last element (0 for a number)."""
    return (_span(a) + 1) * a.element_size() if isinstance(a, _Tensor) else 0


def _general(fn, args, casts, out, shape, res):
    """Any layout: the flat kernel if all tensors share the output's dense layout, else strided."""
    # fn, casts (from a Pointwise plan) and res (a TL_DTYPE value) live as long as the process:
    # their ids are keys, and hashing them (Python-level __hash__) would cost more
    # (casts identifies the Pointwise plan, so the inputs' dtypes; out's dtype is in the key
    # for casting stores, whose plans do not fix it: launches are ``planned``)
    key = (id(fn), id(casts), id(res), out.shape, out.stride(), out.dtype,
           tuple((a.shape, a.stride()) if isinstance(a, _Tensor) else type(a) for a in args))
    launch = _LAYOUT_PLANS.get(key)
    if launch is None:
        launch = _LAYOUT_PLANS.keep(key, _layout_plan(fn, args, casts, out, shape, res))
    launch.planned(out, *args)
    return launch


def _layout_plan(fn, args, casts, out, shape, res):
    """The launch for these operand layouts, prepared with its grid and trailing arguments
    (the unused input slots, n, then for the strided kernel 4 sizes and 25 strides: their
    specialization is worked out once, not at every call). Called as
    ``launch.planned(out, *inputs)``: the head holds tensors and numbers only, no padding,
    so the lean launch of :meth:`Prepared.planned` applies where the numbers are floats."""
    ndim = len(shape)
    kinds, strides = [], []
    zeros = [0] * ndim
    for a in args:
        if isinstance(a, _Tensor) and a.numel() != 1:
            kinds.append(TENSOR)
            # broadcast strides: size-1 or missing dims read with stride 0
            strides.append([0] * (ndim - a.dim()) + [0 if sz == 1 else s for sz, s in zip(a.shape, a.stride())])
        else:
            kinds.append(SINGLE if isinstance(a, _Tensor) else SCALAR)
            strides.append(zeros)
    casts = list(casts)
    nin = len(args)
    while len(kinds) < MAX_INPUTS:
        kinds.append(SCALAR)
        casts.append(None)
        strides.append(zeros)
    unused = (0,) * (MAX_INPUTS - nin)  # input slots NIN prunes: never read
    n = out.numel()
    int64 = needs_int64(out, args)
    grid = (cdiv(n, BLOCK),)
    out_strides = [0 if sz == 1 else s for sz, s in zip(out.shape, out.stride())]
    common = dict(FN=fn, NIN=nin, K0=kinds[0], K1=kinds[1], K2=kinds[2], K3=kinds[3],
                  C0=casts[0], C1=casts[1], C2=casts[2], C3=casts[3], RES=res, INT64=int64, BLOCK=BLOCK)
    if is_dense(out) and all(st == out_strides for k, st in zip(kinds, strides) if k == TENSOR):
        # identical dense layouts (contiguous, or all transposed alike): walk storage linearly
        return _launch_flat.bind(**common, UNROLL=1).prepare(grid, (*unused, n))
    sizes, all_st = _coalesce(list(shape), [out_strides] + strides)
    rank = len(sizes)
    if rank > MAX_RANK:
        raise Unsupported
    pad = MAX_RANK - rank
    sizes_p = sizes + [1] * pad
    extra = (*sizes_p[1:], *(x for st in all_st for x in st + [0] * pad))
    return _launch_strided.bind(RANK=rank, **common).prepare(grid, (*unused, n, *extra))


def f64_scalar(value: float, device) -> torch.Tensor:
    """A 0-d float64 tensor holding ``value`` exactly (Triton takes Python floats as fp32)."""
    t = torch.empty((), dtype=torch.float64, device=device)
    native("fill_.Scalar")(t, value)
    return t


def _new_output(tensors, shape, dtype):
    """Result tensor laid out like the first full-shape dense input (as TensorIterator does)."""
    for t in tensors:
        if t.shape == shape and t.dim() > 1 and not t.is_contiguous() and is_dense(t):
            return torch.empty_strided(shape, t.stride(), dtype=dtype, device=t.device)
    return torch.empty(shape, dtype=dtype, device=tensors[0].device)


def _check_out(out, shape, dtype, tensors):
    """``out=``/in-place cases torch resolves (resize, errors, overlap) go to torch."""
    if out.shape != shape or not torch.can_cast(dtype, out.dtype):
        raise Unsupported
    if any(st == 0 and sz > 1 for st, sz in zip(out.stride(), out.shape)):
        raise Unsupported  # internal overlap: torch raises the proper error
    base = None
    for t in tensors:
        if t is out:
            continue
        if base is None:
            base = out.untyped_storage().data_ptr()
        if t.untyped_storage().data_ptr() == base and not (
            t.data_ptr() == out.data_ptr() and t.stride() == out.stride() and t.shape == out.shape
        ):
            raise Unsupported  # partial overlap with an input


def declare_pointwise(family: str, run, overloads, public=None, plain=None):
    """Declare host functions for every aten overload in ``overloads``, all calling ``run``.

    Returns the public entry point ``gemsops.ops.<family>``: ``run``, with inputs it does
    not handle passed to ``public`` (default ``torch.<family>``).

    ``run`` takes the functional overloads' arguments plus ``out=``. An overload whose
    name ends in ``_`` (``mul_.Tensor``) runs in place (``out=self``); ``.out`` style
    overloads pass their ``out``/``grad_input`` tensor as ``out``. The hosts forward
    arguments as the dispatcher gives them (positional as in the schema, keyword-only
    by name), so one ``run`` serves overloads whose schemas differ only in out/in-place.

    ``plain``, a :class:`Pointwise`, takes the calls that pass exactly two positional
    arguments and no keyword (``a + b``, ``a.add_(b)``: ``alpha`` left at its default
    never reaches the host), skipping ``run``'s Python call layer on the commonest call.
    """
    impls = {}
    for overload in overloads:
        overload = overload.removesuffix(".default")  # torch.library spells default overloads bare
        impls[overload] = _host(family, overload, run, plain)
    declare(family, impls)
    public = public or getattr(torch, family)

    def entry(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except Unsupported:
            return public(*args, **kwargs)

    entry.__name__ = entry.__qualname__ = family
    entry.__doc__ = f"torch.{family} through gems (torch's kernel for inputs gems does not handle)."
    return entry


def _host(family, overload, run, plain=None):
    """The host function of one overload: ``run`` (or ``plain``, see ``declare_pointwise``)
    with ``out`` set as the overload's schema says, and torch's kernel for Unsupported
    inputs. One function, not a wrapper around a wrapper: this is every pointwise call's
    path, and a Python call layer costs ~0.3 us."""
    tensor_positions = []

    def native_kernel(args, kwargs):
        # the dispatcher hands a Python kernel the wrapped numbers of ``x * 2``
        # (``mul.Tensor``) as Python numbers; torch's own kernel needs them as tensors again
        if not tensor_positions:
            tensor_positions.append(frozenset(
                i for i, a in enumerate(aten_overload(overload)._schema.arguments) if str(a.type) == "Tensor"))
        return vendor_fallback(overload, _rewrap_numbers(args, tensor_positions[0]), kwargs)

    in_place = overload.partition(".")[0].endswith("_")
    if plain is not None and in_place:
        def host(*args, **kwargs):
            try:
                if not kwargs and len(args) == 2:
                    return plain(*args, out=args[0])
                return run(*args, out=args[0], **kwargs)
            except Unsupported:
                return native_kernel(args, kwargs)
    elif plain is not None and not overload.endswith("out"):
        def host(*args, **kwargs):
            try:
                if not kwargs and len(args) == 2:
                    return plain(*args)
                return run(*args, **kwargs)
            except Unsupported:
                return native_kernel(args, kwargs)
    elif in_place:  # out is self
        def host(*args, **kwargs):
            try:
                return run(*args, out=args[0], **kwargs)
            except Unsupported:
                return native_kernel(args, kwargs)
    else:
        def host(*args, **kwargs):
            try:
                if "grad_input" in kwargs:  # the backward ops' .out overloads name it so
                    kw = dict(kwargs)
                    kw["out"] = kw.pop("grad_input")
                    return run(*args, **kw)
                return run(*args, **kwargs)
            except Unsupported:
                return native_kernel(args, kwargs)

    host.__name__ = host.__qualname__ = f"{family}_{overload.replace('.', '_')}"
    host.__doc__ = f"aten::{overload}"
    return host


def vendor_fallback(overload, args, kwargs):
    """Torch's kernel for ``overload``, for a host function that raised Unsupported.

    Where some argument is on the vendor's device, the dispatcher chose the vendor's key
    (the highest backend among the arguments) to reach gems, so torch's kernel for that key
    is the one to run. ``registry.fallback`` looks at the first tensor only and otherwise
    goes back through the dispatcher, which re-enters gems for ``copy_(cpu_dst, cuda_src)``
    or ``_to_copy(cpu_src, device="cuda")`` without end.
    """
    if _reaches_vendor(args, kwargs):
        return native(overload)(*args, **kwargs)
    return fallback(overload, *args, **kwargs)


def with_vendor_fallback(overload: str):
    """``registry.with_fallback`` with :func:`vendor_fallback` for Unsupported inputs."""

    def wrap(fn):
        def host(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Unsupported:
                return vendor_fallback(overload, args, kwargs)

        host.__name__, host.__qualname__, host.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        host.__wrapped__ = fn
        return host

    return wrap


def _reaches_vendor(args, kwargs) -> bool:
    """True when some tensor argument (also inside lists) or ``device=`` is the vendor's device."""
    if _DEVICE_TYPE is None:
        return False
    for a in (*args, *kwargs.values()):
        if isinstance(a, _Tensor):
            if a.device.type == _DEVICE_TYPE:
                return True
        elif isinstance(a, (list, tuple)):
            if any(isinstance(t, _Tensor) and t.device.type == _DEVICE_TYPE for t in a):
                return True
    device = kwargs.get("device")
    return device is not None and torch.device(device).type == _DEVICE_TYPE


def _rewrap_numbers(args, tensor_positions):
    """0-d tensors for Python numbers, of a dtype that promotes as the wrapped number did."""
    if not any(i in tensor_positions and not isinstance(a, _Tensor) for i, a in enumerate(args)):
        return args
    tensors = [a for a in args if isinstance(a, _Tensor)]
    floating = any(t.is_floating_point() or t.is_complex() for t in tensors)
    complex_ = any(t.is_complex() for t in tensors)
    out = []
    for i, a in enumerate(args):
        if i in tensor_positions and isinstance(a, (bool, int, float, complex)):
            # same category as the tensors: keeps the value exact and the dtype theirs;
            # a higher category: the default dtype, as for a wrapped number
            if isinstance(a, bool):
                dtype = torch.bool
            elif isinstance(a, int):
                dtype = torch.int64
            elif isinstance(a, float):
                dtype = torch.float64 if floating else torch.get_default_dtype()
            else:
                dtype = torch.complex128 if complex_ else torch.complex64
            a = torch.tensor(a, dtype=dtype)  # on the CPU: a scalar to every device, no copy
        out.append(a)
    return tuple(out)

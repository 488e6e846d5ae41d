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
- Contiguous (or identically laid out dense) operands take a flat 1-D fast path.
- ``out=`` and in-place (``out`` is the first input), int64 offsets past 2**31 elements.

Anything else raises :class:`Unsupported`, which the host function turns into a call of
torch's own kernel (see ``runtime.registry.with_fallback``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as Promotion  # noqa: F401
from torch._prims_common import elementwise_dtypes

from ..runtime import VENDOR, Launcher, Unsupported, on_vendor_device
from ._common import INT32_MAX as _INT32_MAX, TL_DTYPE, is_dense, kernel_dtype_ok, needs_int64

MAX_RANK = 5
MAX_INPUTS = 3
BLOCK = 1024

# operand kinds (constexpr): how the kernel reads an input
SCALAR, TENSOR, SINGLE = 0, 1, 2  # Python number / full tensor / one element broadcast everywhere


@triton.jit
def _load(ptr, offs, mask, KIND: tl.constexpr, COMPUTE: tl.constexpr):
    if KIND == 0:
        v = ptr
    elif KIND == 2:
        v = tl.load(ptr)
    else:
        v = tl.load(ptr + offs, mask=mask)
    if COMPUTE is not None:
        v = v.to(COMPUTE)
    return v


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
def _pointwise_flat_kernel(
    out_ptr, x0, x1, x2, n,
    FN: tl.constexpr, NIN: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
    INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = _load(x0, offs, mask, K0, C0)
    if NIN == 1:
        r = FN(a)
    elif NIN == 2:
        r = FN(a, _load(x1, offs, mask, K1, C1))
    else:
        r = FN(a, _load(x1, offs, mask, K1, C1), _load(x2, offs, mask, K2, C2))
    tl.store(out_ptr + offs, r, mask=mask)


@triton.jit
def _pointwise_strided_kernel(
    out_ptr, x0, x1, x2, n,
    d1, d2, d3, d4,  # sizes of dims 1..4 (dim 0's size is implied by n)
    o0, o1, o2, o3, o4,
    a0, a1, a2, a3, a4,
    b0, b1, b2, b3, b4,
    c0, c1, c2, c3, c4,
    FN: tl.constexpr, NIN: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
    RANK: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    # multi-index, innermost dim last; unused dims stay 0
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
    # dims were reversed-padded on the host so that dim RANK-1 is the innermost
    a = _load(x0, _strided_offset(i0, i1, i2, i3, i4, a0, a1, a2, a3, a4, RANK), mask, K0, C0)
    if NIN == 1:
        r = FN(a)
    elif NIN == 2:
        b = _load(x1, _strided_offset(i0, i1, i2, i3, i4, b0, b1, b2, b3, b4, RANK), mask, K1, C1)
        r = FN(a, b)
    else:
        b = _load(x1, _strided_offset(i0, i1, i2, i3, i4, b0, b1, b2, b3, b4, RANK), mask, K1, C1)
        c = _load(x2, _strided_offset(i0, i1, i2, i3, i4, c0, c1, c2, c3, c4, RANK), mask, K2, C2)
        r = FN(a, b, c)
    tl.store(out_ptr + _strided_offset(i0, i1, i2, i3, i4, o0, o1, o2, o3, o4, RANK), r, mask=mask)


_launch_flat = Launcher(_pointwise_flat_kernel)
_launch_strided = Launcher(_pointwise_strided_kernel)
_DEVICE_TYPE = VENDOR.device_type if VENDOR else None


def _signature(args) -> tuple:
    sig = []
    for a in args:
        if isinstance(a, torch.Tensor):
            sig.append((a.dtype, a.dim() == 0))
        else:
            sig.append(type(a))
    return tuple(sig)


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


class Pointwise:
    """An elementwise op over 1 to 3 inputs built from a scalar ``@triton.jit`` function.

    ``promotion`` is PyTorch's type-promotion kind for the op. ``promote`` lists the
    input positions that take part in promotion (default: all); the others are passed
    to ``fn`` as loaded (a ``where`` condition, an ``alpha``). ``out_dtype`` forces the
    result dtype (e.g. ``torch.bool``) when the op's rule is not a promotion kind.
    ``compute_dtype`` forces the dtype ``fn`` computes in.
    """

    def __init__(self, name, fn, promotion=Promotion.DEFAULT, promote=None, out_dtype=None,
                 compute_dtype=None):
        self.name = name
        self.fn = fn
        self.promotion = promotion
        self.promote = promote
        self.out_dtype = out_dtype
        self.compute_dtype = compute_dtype
        self._dtype_cache: dict = {}
        self._plans: dict = {}

    def dtypes(self, args) -> tuple[torch.dtype, torch.dtype]:
        """(compute dtype, result dtype) for these inputs, as PyTorch would choose."""
        key = _signature(args)
        hit = self._dtype_cache.get(key)
        if hit is None:
            promoted = args if self.promote is None else [args[i] for i in self.promote]
            compute, result = elementwise_dtypes(*promoted, type_promotion_kind=self.promotion)
            if self.compute_dtype is not None:
                compute = self.compute_dtype
            if self.out_dtype is not None:
                result = self.out_dtype
            hit = self._dtype_cache[key] = (compute, result)
        return hit

    def __call__(self, *args, out: torch.Tensor | None = None):
        """Compute ``fn`` elementwise over ``args`` (tensors or Python numbers)."""
        if out is None:
            result = self._fast(args)
            if result is not None:
                return result
        return self._general(args, out)

    def _fast(self, args):
        """Contiguous tensors of one shape (plus Python numbers): the common case, kept lean."""
        first = None
        for a in args:
            if isinstance(a, torch.Tensor):
                if first is None:
                    first = a
                    if first.device.type != _DEVICE_TYPE or not first.is_contiguous():
                        return None
                elif a.shape != first.shape or not a.is_contiguous() or a.device != first.device:
                    return None
            elif isinstance(a, float) and first is not None and first.dtype == torch.float64:
                return None  # fp64 scalars need the general path (Triton passes floats as fp32)
        if first is None or first.dim() == 0:
            return None
        plan = self._plans.get(_signature(args))
        if plan is None:
            plan = self._plans[_signature(args)] = self._make_plan(args)
        if plan is False:
            return None
        result_dtype, kinds, casts = plan
        n = first.numel()
        out = torch.empty(first.shape, dtype=result_dtype, device=first.device)
        if n == 0 or n > _INT32_MAX:
            return out if n == 0 else None
        x = args + (0,) * (MAX_INPUTS - len(args))
        _launch_flat(
            ((n + BLOCK - 1) // BLOCK,), out, x[0], x[1], x[2], n,
            FN=self.fn, NIN=len(args), K0=kinds[0], K1=kinds[1], K2=kinds[2],
            C0=casts[0], C1=casts[1], C2=casts[2], INT64=False, BLOCK=BLOCK,
        )
        return out

    def _make_plan(self, args):
        """(result dtype, operand kinds, casts) for the fast path, or False if it does not apply."""
        compute, result_dtype = self.dtypes(args)
        if not (kernel_dtype_ok(compute) and kernel_dtype_ok(result_dtype)):
            return False
        if any(isinstance(a, torch.Tensor) and not kernel_dtype_ok(a.dtype) for a in args):
            return False
        compute_tl = TL_DTYPE[compute]
        kinds = [TENSOR if isinstance(a, torch.Tensor) else SCALAR for a in args] + [SCALAR] * MAX_INPUTS
        casts = [compute_tl if self.promote is None or i in self.promote else None for i in range(len(args))]
        return result_dtype, kinds[:MAX_INPUTS], casts + [None] * (MAX_INPUTS - len(args))

    def _general(self, args, out):
        compute, result_dtype = self.dtypes(args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        # a CPU 0-d tensor next to device tensors is a scalar (torch allows that mix)
        if VENDOR is not None and VENDOR.device_type != "cpu":
            args = tuple(a.item() if isinstance(a, torch.Tensor) and a.dim() == 0 and a.device.type == "cpu"
                         and any(t.device.type != "cpu" for t in tensors) else a for a in args)
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors or not on_vendor_device(*tensors, out):
            raise Unsupported
        if not (kernel_dtype_ok(compute) and kernel_dtype_ok(result_dtype)):
            raise Unsupported
        if any(not kernel_dtype_ok(t.dtype) for t in tensors):
            raise Unsupported
        shape = _broadcast_shape(tensors)
        if out is None:
            out = _new_output(tensors, shape, result_dtype)
        else:
            _check_out(out, shape, result_dtype, tensors)
        if out.numel() == 0:
            return out
        self._launch(args, out, shape, compute)
        return out

    def _launch(self, args, out, shape, compute):
        ndim = len(shape)
        kinds, ptrs, casts, strides = [], [], [], []
        compute_tl = TL_DTYPE[compute]
        for i, a in enumerate(args):
            participates = self.promote is None or i in self.promote
            if isinstance(a, torch.Tensor):
                if a.numel() == 1:
                    kinds.append(SINGLE)
                    strides.append([0] * ndim)
                else:
                    kinds.append(TENSOR)
                    # broadcast strides: size-1 or missing dims read with stride 0
                    st = [0] * (ndim - a.dim()) + [0 if sz == 1 else s for sz, s in zip(a.shape, a.stride())]
                    strides.append(st)
                ptrs.append(a)
            else:
                if compute == torch.float64 and isinstance(a, float):
                    # Triton passes Python floats as fp32; keep full precision in a 0-d tensor
                    a = torch.tensor(a, dtype=torch.float64, device=out.device)
                    kinds.append(SINGLE)
                else:
                    kinds.append(SCALAR)
                strides.append([0] * ndim)
                ptrs.append(a)
            casts.append(compute_tl if participates else None)
        nin = len(args)
        while len(ptrs) < MAX_INPUTS:  # unused slots: never read (NIN prunes them)
            ptrs.append(0)
            kinds.append(SCALAR)
            casts.append(None)
            strides.append([0] * ndim)
        n = out.numel()
        int64 = needs_int64(out, *[p for p in ptrs if isinstance(p, torch.Tensor)])
        grid = (triton.cdiv(n, BLOCK),)
        out_strides = [0 if sz == 1 else s for sz, s in zip(out.shape, out.stride())]
        if is_dense(out) and all(
            st == out_strides for k, st in zip(kinds, strides) if k == TENSOR
        ) and all(p.shape == shape for p, k in zip(ptrs, kinds) if k == TENSOR):
            # identical dense layouts: walk storage linearly
            _launch_flat(
                grid, out, ptrs[0], ptrs[1], ptrs[2], n,
                FN=self.fn, NIN=nin, K0=kinds[0], K1=kinds[1], K2=kinds[2],
                C0=casts[0], C1=casts[1], C2=casts[2], INT64=int64, BLOCK=BLOCK,
            )
            return
        sizes, (o_st, *in_st) = _coalesce(list(shape), [out_strides] + strides)
        rank = len(sizes)
        if rank > MAX_RANK:
            raise Unsupported
        pad = MAX_RANK - rank
        sizes_p = sizes + [1] * pad
        all_st = [st + [0] * pad for st in [o_st, *in_st]]
        _launch_strided(
            grid, out, ptrs[0], ptrs[1], ptrs[2], n,
            sizes_p[1], sizes_p[2], sizes_p[3], sizes_p[4],
            *all_st[0], *all_st[1], *all_st[2], *all_st[3],
            FN=self.fn, NIN=nin, K0=kinds[0], K1=kinds[1], K2=kinds[2],
            C0=casts[0], C1=casts[1], C2=casts[2], RANK=rank, INT64=int64, BLOCK=BLOCK,
        )


def _broadcast_shape(tensors):
    shape = tensors[0].shape
    if all(t.shape == shape for t in tensors):
        return shape
    return torch.broadcast_shapes(*(t.shape for t in tensors))


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
    for t in tensors:
        if t is out:
            continue
        if t.untyped_storage().data_ptr() == out.untyped_storage().data_ptr() and not (
            t.data_ptr() == out.data_ptr() and t.stride() == out.stride() and t.shape == out.shape
        ):
            raise Unsupported  # partial overlap with an input

"""Shared pieces of the row-wise kernels (softmax, norms, fused LLM ops).

- ``RowPlanner``: launch parameters per row width. Rows up to ``ONE_PASS_MAX`` wide are
  kept whole in registers (``BLOCK_N = next_pow2(n)``); wider rows loop over chunks. Each
  width class (narrow <= 128, medium <= 1024, wide <= ONE_PASS_MAX, loop) has its own
  tuner, ``<name>_<class>`` in the vendor YAML, so candidates fit the class. Decisions are
  cached per (n, rows bucket) so the per-call host cost is one dict lookup.
- ``rows_2d``: a [rows, n] view with unit stride inside a row, without copying when the
  leading dims collapse to one stride.
- ``launcher``: the runtime's lean launch path (re-exported for the row-kernel files).
- ``column_sum``: sums per-program partial rows (weight/bias gradients) in a second kernel,
  deterministic and free of atomics; ``column_sum_launch`` is its prepared form, and
  ``BackwardPlan`` replays a norm backward (row kernel plus column sum) for one signature.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Tuner, bucket, capturing, launcher  # noqa: F401  (launcher re-exported)
from ._common import allocation_stand_in, cdiv, next_pow2, sm_count
from ._reduction import tuned


def _limits() -> dict:
    return VENDOR.config("rows_limits").get("default", {}) if VENDOR else {}


ONE_PASS_MAX = int(_limits().get("one_pass_max", 16384))
CLASSES = (("narrow", 128), ("medium", 1024), ("wide", ONE_PASS_MAX), ("loop", None))
_DEFAULT = {"BLOCK_M": 1, "BLOCK_N": 2048, "num_warps": 4}


def width_class(n: int) -> str:
    for cls, limit in CLASSES:
        if limit is None or n <= limit:
            return cls
    return "loop"


class RowPlanner:
    """Chooses BLOCK_M / BLOCK_N / ONE_PASS / num_warps for a row kernel.

    ``cold``: time the candidates with the L2 cache cleared (``Tuner(cold=True)``), for
    kernels whose inputs a model does not leave in L2 (a backward reads activations the
    forward saved long before).
    """

    def __init__(self, name: str, kernels, cold: bool = False):
        self.tuners = {cls: Tuner(f"{name}_{cls}", kernels=kernels, cold=cold) for cls, _ in CLASSES}
        self.cache: dict = {}

    def plan(self, n: int, rows: int, launch, key=()) -> dict:
        ck = (n, bucket(min(rows, 65536)), key)
        p = self.cache.get(ck)
        if p is None:
            cls = width_class(n)
            cfg = tuned(self.tuners[cls], (n if cls == "narrow" else bucket(n), ck[1], key),
                        lambda c: launch(self.to_plan(c, n, cls)))
            p = self.to_plan(cfg, n, cls)
            if not capturing():  # under capture an untuned width gets a one-off default
                self.cache[ck] = p
        return p

    @staticmethod
    def to_plan(cfg, n, cls) -> dict:
        cfg = cfg or _DEFAULT
        one_pass = cls != "loop"
        block_n = next_pow2(n) if one_pass else int(cfg.get("BLOCK_N", 2048))
        plan = dict(cfg)
        plan.update(BLOCK_M=int(cfg.get("BLOCK_M", 1)), BLOCK_N=block_n, ONE_PASS=one_pass,
                    num_warps=int(cfg.get("num_warps", 4)))
        return plan


def collapsed_stride(t: torch.Tensor):
    """Stride between rows when all leading dims of ``t`` walk memory uniformly, else None."""
    if t.dim() <= 1:
        return t.shape[-1] if t.dim() else 1
    expected = None
    size_after = 1
    for size, stride in zip(reversed(t.shape[:-1]), reversed(t.stride()[:-1])):
        if size == 1:
            continue
        if expected is None:
            expected = stride
        elif stride != expected * size_after:
            return None
        size_after *= size
    return expected if expected is not None else t.shape[-1]


def rows_2d(t: torch.Tensor, n: int):
    """(tensor, row stride) such that row r, column c of the [numel/n, n] view is at r*stride + c."""
    if t.is_contiguous():
        return t, n
    if t.dim() >= 1 and t.shape[-1] == n and (t.stride(-1) == 1 or n == 1):
        s = collapsed_stride(t)
        if s is not None:
            return t, s
    v = t.reshape(-1, n)
    if v.stride(1) != 1 and n != 1:
        v = v.contiguous()
    return v, v.stride(0) if v.shape[0] > 1 else n


def processors(device: torch.device) -> int:
    """Programs that run at once, roughly: the SM count on a GPU, 2 under the interpreter
    (which runs programs one by one; small, so that CPU tests take the same branches)."""
    return sm_count(device, 2)


def partial_programs(row_blocks: int, device: torch.device) -> int:
    """How many programs share the rows of a weight-gradient reduction."""
    return max(1, min(row_blocks, 2 * processors(device)))


@triton.jit
def _column_sum_kernel(out, out2, part, G, N, row_stride, first,
                       BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):
    # program (i, j) sums columns [i*BLOCK_N, (i+1)*BLOCK_N) of the j-th N-wide slice of
    # part's rows, starting at column ``first``, into out (j = 0) or out2 (j = 1)
    pid = tl.program_id(0)
    half = tl.program_id(1)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    src = part + first + half * N
    acc = tl.zeros([BLOCK_G, BLOCK_N], tl.float32)
    for start in range(0, G, BLOCK_G):
        g = start + tl.arange(0, BLOCK_G)
        mask = (g < G)[:, None] & cmask[None, :]
        acc += tl.load(src + g[:, None].to(tl.int64) * row_stride + cols[None, :], mask=mask, other=0.0)
    total = tl.sum(acc, 0)
    if half == 0:
        tl.store(out + cols, total.to(out.dtype.element_ty), mask=cmask)
    else:
        tl.store(out2 + cols, total.to(out2.dtype.element_ty), mask=cmask)


def _column_sum_blocks(G: int, N: int):
    return 128 if N >= 128 else next_pow2(N), min(32, next_pow2(G))


def column_sum(part: torch.Tensor, out: torch.Tensor, out2: torch.Tensor | None = None, first: int = 0):
    """out[c] = sum over g of part[g, first + c], rounded once to out's dtype, and, given
    ``out2``, out2[c] the same over columns first + N + c (N = out.numel()). part is fp32
    with unit column stride; out and out2 are contiguous."""
    G, N = part.shape[0], out.numel()
    BLOCK_N, BLOCK_G = _column_sum_blocks(G, N)
    _L_column_sum[(cdiv(N, BLOCK_N), 1 if out2 is None else 2)](
        out, out if out2 is None else out2, part, G, N, part.stride(0), first,
        BLOCK_G=BLOCK_G, BLOCK_N=BLOCK_N, num_warps=4)


def column_sum_launch(G: int, N: int, row_stride: int, outputs: int, first: int = 0):
    """``column_sum`` as a prepared launch for a plan: ``launch(out, out2, part)`` for a
    [G, row_stride] part (pass out twice when ``outputs`` is 1)."""
    BLOCK_N, BLOCK_G = _column_sum_blocks(G, N)
    return _L_column_sum.bind(BLOCK_G=BLOCK_G, BLOCK_N=BLOCK_N, num_warps=4).prepare(
        (cdiv(N, BLOCK_N), outputs), (G, N, row_stride, first)).planned


_L_column_sum = launcher(_column_sum_kernel)


class BackwardPlan:
    """One call signature of a norm backward: a row kernel writing dx and per-program
    partial rows, then ``column_sum`` of those rows into the parameter gradients.

    Outputs and the partial rows are allocated from stand-ins and both launches are
    prepared with their integers, so a repeated call skips the checks and Triton's argument
    handling (at 4096x4096 the checked path took 82-92 us of host time per call on an H100
    machine, the planned one 35-37, native 18-21). ``grads`` are the parameter gradients
    of the first call in output order, None where not asked for; the kernel is called as
    ``kernel(dx, part, *inputs)`` and the column sum as ``colsum(first, last, part)`` over
    the gradients asked for.
    """

    __slots__ = ("device", "dx_like", "grads_like", "part_like", "zero_part", "kernel", "colsum", "ends",
                 "no_grads")

    def __init__(self, dx, grads, part, zero_part, kernel, colsum):
        self.dx_like = None if dx is None else allocation_stand_in(dx)
        self.grads_like = tuple(None if g is None else allocation_stand_in(g) for g in grads)
        self.part_like = None if part is None else allocation_stand_in(part)
        self.device = next(t for t in (dx, *grads) if t is not None).get_device()
        asked = [i for i, g in enumerate(grads) if g is not None]
        self.ends = (asked[0], asked[-1]) if asked else None
        self.no_grads = (None,) * len(grads)
        self.zero_part, self.kernel, self.colsum = zero_part, kernel, colsum

    def __call__(self, *inputs):
        dx = None if self.dx_like is None else torch.empty_like(self.dx_like)
        if self.ends is None:
            self.kernel(dx, None, *inputs)
            return (dx, *self.no_grads)
        grads = [None if like is None else torch.empty_like(like) for like in self.grads_like]
        part = (torch.zeros_like if self.zero_part else torch.empty_like)(self.part_like)
        self.kernel(dx, part, *inputs)
        self.colsum(grads[self.ends[0]], grads[self.ends[1]], part)
        return (dx, *grads)

"""The tiled GEMM shared by mm, addmm, bmm, baddbmm, mv and addmv.

    out[b] = alpha * (A[b] @ B[b]) + beta * bias[b]        (bias optional, broadcast by strides)

One kernel family, every operand passed as (pointer, batch stride, row stride, column
stride), so transposed and non-contiguous operands (``mm(x, W.t())`` from nn.Linear) need
no copies, and broadcast bias rows/columns are 0 strides. The batch is grid axis 2.

Numerics: products accumulate in fp32 and the result is rounded once to the output
dtype after the epilogue (alpha, beta, bias), as cuBLAS does. fp32 operands use
``input_precision="ieee"`` unless ``torch.backends.cuda.matmul.allow_tf32`` is set, read
on every call so the flag behaves as it does for torch's own matmul.

Configs. Five tuners, keyed by (bucketed M, N, K, dtype, operand layout, batched):
- ``mm``: 16-bit operands, M > MID_M: grouped tile ordering (GROUP_M) for L2 reuse.
  Configs with ``TMA: 1`` select the persistent tensor-descriptor kernel (one program per
  SM, TMA loads that zero-fill the edges); it serves GEMMs whose operands have a unit
  stride and 16-byte aligned rows (and batch strides: bmm through 3-D descriptors), and
  any other call falls back to a classic config.
- ``mm_mid_m``: 16-bit operands, SMALL_M < M <= MID_M (batched decode, chunked prefill):
  the same two kernels with tiles and K splits (``SPLIT_K``, as below) that give every SM
  work when the output has few tiles. Timed with L2 cleared, as ``mm_small_m``: at these
  sizes the weight's read from memory is most of the time, and the config that is fastest
  with the weight in L2 is often not the fastest without it.
- ``mm_small_m``: 16-bit operands, M <= SMALL_M (decode, mv): reading B dominates, so the
  candidates use thin M tiles and split K over grid axis 1 to put enough CTAs on the
  weight. Partial tiles go to an fp32 workspace; the last CTA of a tile (counted with
  an atomic, reset by that CTA so the counters stay zero between calls) sums them in
  a fixed order (deterministic) and runs the epilogue. One launch, no extra kernels.
- ``mm_short_k``: 16-bit operands, M > SMALL_M, K <= SHORT_K (attention scores, q @ k^T
  with K = head size): a tile does at most a few K steps, so writing the output is most of
  the work. The persistent TMA kernel keeps that at cuBLAS's pace (a program's stores
  overlap its next tile's loads); classic configs with shallow pipelines stay as the
  candidates for operands TMA cannot describe.
- ``mm_fp32``: fp32 operands (tiles sized for 4-byte elements).
Host path: each exact call signature (shapes, strides, dtype, bias/alpha/beta flags, tf32
flag, device) gets a launcher closure holding its config, grid, constexprs and split-K
workspace, so after the first call the host work is a tuple build, one dict lookup and
the launch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Plans, Tuner, Unsupported, bucket, launcher
from ..runtime import capturing as _capturing  # a module name, so tests can stand in for a capture
from ._common import (INT32_MAX, allocation_stand_in, cdiv, current_device, default_strides, dot_upcast,
                      planned_output, sm_count, unused_pointer)

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # older Triton: the TMA candidates are never applicable
    TensorDescriptor = None

SMALL_M = 64
MID_M = 512
SHORT_K = 256
GEMM_DTYPES = frozenset(d for d in (torch.float32, torch.float16, torch.bfloat16)
                        if VENDOR is not None and d in VENDOR.dtypes)
_MAX_GRID_YZ = 65535


@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, c_ptr, x_ptr, ws_ptr, lock_ptr, alpha, beta,
    M, N, K,
    s_ab, s_am, s_ak,
    s_bb, s_bk, s_bn,
    s_cb, s_cm, s_cn,
    s_xb, s_xm, s_xn,
    HAS_BIAS: tl.constexpr, SCALE_ACC: tl.constexpr, SCALE_BIAS: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, INT64: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    bid = tl.program_id(2).to(tl.int64)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # grouped ordering: GROUP_M row-tiles sweep the columns together, so the B tiles
    # they share stay in L2
    width = GROUP_M * grid_n
    group = pid // width
    first_m = group * GROUP_M
    group_m = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_m
    pid_n = (pid % width) // group_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # rows/columns past the edge read row 0 / column 0 instead of being masked: the loads
    # stay unmasked (vectorized) and the store masks them out
    ram = rm % M
    rbn = rn % N
    if INT64:
        ram = ram.to(tl.int64)
        rbn = rbn.to(tl.int64)
        rk = rk.to(tl.int64)

    k_tiles = tl.cdiv(K, BLOCK_K)
    k_per = tl.cdiv(k_tiles, SPLIT_K)
    k_lo = pid_k * k_per
    k_hi = tl.minimum(k_lo + k_per, k_tiles)
    a_ptrs = a_ptr + bid * s_ab + ram[:, None] * s_am + (k_lo * BLOCK_K + rk)[None, :] * s_ak
    b_ptrs = b_ptr + bid * s_bb + (k_lo * BLOCK_K + rk)[:, None] * s_bk + rbn[None, :] * s_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kt in range(k_lo, k_hi):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - kt * BLOCK_K
            a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < k_left, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * s_ak
        b_ptrs += BLOCK_K * s_bk

    if SPLIT_K == 1:
        _epilogue(acc, c_ptr, x_ptr, bid, rm, rn, M, N, s_cb, s_cm, s_cn, s_xb, s_xm, s_xn,
                  alpha, beta, HAS_BIAS, SCALE_ACC, SCALE_BIAS, INT64)
    else:
        _split_k_epilogue(acc, ws_ptr, lock_ptr, bid * grid_m * grid_n + pid, pid_k, c_ptr, x_ptr, bid, rm, rn,
                          M, N, s_cb, s_cm, s_cn, s_xb, s_xm, s_xn, alpha, beta,
                          HAS_BIAS, SCALE_ACC, SCALE_BIAS, INT64, SPLIT_K, BLOCK_M, BLOCK_N)


@triton.jit
def _split_k_epilogue(acc, ws_ptr, lock_ptr, tile, split, c_ptr, x_ptr, bid, rm, rn, M, N,
                      s_cb, s_cm, s_cn, s_xb, s_xm, s_xn, alpha, beta,
                      HAS_BIAS: tl.constexpr, SCALE_ACC: tl.constexpr, SCALE_BIAS: tl.constexpr,
                      INT64: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Store this split's partial tile; the last split of the tile to arrive sums them and
    runs the epilogue (see the module docstring)."""
    tm = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    ws_tile = ws_ptr + tile.to(tl.int64) * (SPLIT_K * BLOCK_M * BLOCK_N)
    tl.store(ws_tile + split * (BLOCK_M * BLOCK_N) + tm, acc)
    # every thread's partial store must precede the (single-thread) release below
    tl.debug_barrier()
    arrived = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel")
    if arrived == SPLIT_K - 1:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s in range(SPLIT_K):  # fixed order: the sum is deterministic
            acc += tl.load(ws_tile + s * (BLOCK_M * BLOCK_N) + tm, cache_modifier=".cg")
        tl.atomic_xchg(lock_ptr + tile, 0)
        _epilogue(acc, c_ptr, x_ptr, bid, rm, rn, M, N, s_cb, s_cm, s_cn, s_xb, s_xm, s_xn,
                  alpha, beta, HAS_BIAS, SCALE_ACC, SCALE_BIAS, INT64)


@triton.jit
def _epilogue(acc, c_ptr, x_ptr, bid, rm, rn, M, N, s_cb, s_cm, s_cn, s_xb, s_xm, s_xn,
              alpha, beta, HAS_BIAS: tl.constexpr, SCALE_ACC: tl.constexpr,
              SCALE_BIAS: tl.constexpr, INT64: tl.constexpr):
    if INT64:
        rm = rm.to(tl.int64)
        rn = rn.to(tl.int64)
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    if SCALE_ACC:
        acc = acc * alpha
    if HAS_BIAS:
        x = tl.load(x_ptr + bid * s_xb + rm[:, None] * s_xm + rn[None, :] * s_xn, mask=mask, other=0.0)
        x = x.to(tl.float32)
        if SCALE_BIAS:
            x = x * beta
        acc = acc + x
    tl.store(c_ptr + bid * s_cb + rm[:, None] * s_cm + rn[None, :] * s_cn,
             acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemm_tma_kernel(
    a_desc, b_desc, c_ptr, x_ptr, ws_ptr, lock_ptr, alpha, beta,
    M, N, K, batch, num_programs,
    s_cb, s_cm, s_cn, s_xb, s_xm, s_xn,
    HAS_BIAS: tl.constexpr, SCALE_ACC: tl.constexpr, SCALE_BIAS: tl.constexpr,
    A_T: tl.constexpr, B_T: tl.constexpr, BATCHED: tl.constexpr, UPCAST: tl.constexpr, INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, FLATTEN: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    """Persistent variant for 16-bit GEMMs: operands through TMA tensor descriptors.

    One program per SM walks the output tiles (grouped order within each matrix, matrices
    one after the other). TMA zero-fills reads past the edges, so no masks in the K loop.
    A_T / B_T: the descriptor covers the transposed matrix (column-major operand) and the
    loaded tile is transposed back. BATCHED: 3-D descriptors ``[batch, rows, cols]`` with
    one-matrix blocks, so a tile never reads into the next matrix of the batch.
    SPLIT_K: each tile is SPLIT_K work items over consecutive K ranges, summed through the
    workspace as in ``_gemm_kernel`` (M = 128 against a 4096-wide weight has 32 tiles of
    128x128 for 132 SMs).
    """
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    per_matrix = grid_m * grid_n
    k_tiles = tl.cdiv(K, BLOCK_K)
    k_per = tl.cdiv(k_tiles, SPLIT_K)
    width = GROUP_M * grid_n
    for item in tl.range(tl.program_id(0), per_matrix * batch * SPLIT_K, num_programs, flatten=FLATTEN,
                         warp_specialize=WARP_SPECIALIZE):
        # the splits of one tile are neighbouring items, so they run at about the same time
        # and a tile's partial sums are read back soon after they are written
        tile = item // SPLIT_K
        k_lo = (item % SPLIT_K) * k_per
        k_hi = tl.minimum(k_lo + k_per, k_tiles)
        bid = tile // per_matrix
        t = tile % per_matrix
        group = t // width
        first_m = group * GROUP_M
        group_m = tl.minimum(grid_m - first_m, GROUP_M)
        pid_m = first_m + (t % width) % group_m
        pid_n = (t % width) // group_m
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kt in range(k_lo, k_hi):
            off_k = kt * BLOCK_K
            if BATCHED:
                if A_T:
                    a = a_desc.load([bid, off_k, off_m]).reshape(BLOCK_K, BLOCK_M).T
                else:
                    a = a_desc.load([bid, off_m, off_k]).reshape(BLOCK_M, BLOCK_K)
                if B_T:
                    b = b_desc.load([bid, off_n, off_k]).reshape(BLOCK_N, BLOCK_K).T
                else:
                    b = b_desc.load([bid, off_k, off_n]).reshape(BLOCK_K, BLOCK_N)
            else:
                if A_T:
                    a = a_desc.load([off_k, off_m]).T
                else:
                    a = a_desc.load([off_m, off_k])
                if B_T:
                    b = b_desc.load([off_n, off_k]).T
                else:
                    b = b_desc.load([off_k, off_n])
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        rm = off_m + tl.arange(0, BLOCK_M)
        rn = off_n + tl.arange(0, BLOCK_N)
        if SPLIT_K == 1:
            _epilogue(acc, c_ptr, x_ptr, bid.to(tl.int64), rm, rn, M, N, s_cb, s_cm, s_cn, s_xb, s_xm, s_xn,
                      alpha, beta, HAS_BIAS, SCALE_ACC, SCALE_BIAS, INT64)
        else:
            _split_k_epilogue(acc, ws_ptr, lock_ptr, tile, item % SPLIT_K, c_ptr, x_ptr, bid.to(tl.int64), rm, rn,
                              M, N, s_cb, s_cm, s_cn, s_xb, s_xm, s_xn, alpha, beta,
                              HAS_BIAS, SCALE_ACC, SCALE_BIAS, INT64, SPLIT_K, BLOCK_M, BLOCK_N)


# the jit functions a tuner's configs run (its cache key covers their sources)
_CLASSIC_KERNELS = [_gemm_kernel, _split_k_epilogue, _epilogue]
_ALL_KERNELS = [*_CLASSIC_KERNELS, _gemm_tma_kernel]
_TUNERS = {
    "mm": Tuner("mm", kernels=_ALL_KERNELS),
    # M <= 64 reads the weight once, and a model's weights never sit in L2 when its GEMMs
    # run: timed with L2 cleared (one H100, 1x8192x2048 bf16: two candidates tied at 12.7
    # us from L2 took 16.6 and 17.5 us with the weight streamed from HBM)
    "mm_small_m": Tuner("mm_small_m", kernels=_CLASSIC_KERNELS, cold=True),
    # the same reason from M = 65 to 512 (one H100, bf16, us with L2 cleared against graph
    # replay from L2): 512x4096x4096 picked 128x128 tiles at 28.5 us from L2 that took 38.2
    # cleared, where 128x128x128-deep tiles took 36.2 (cuBLAS 32.8)
    "mm_mid_m": Tuner("mm_mid_m", kernels=_ALL_KERNELS, cold=True),
    "mm_short_k": Tuner("mm_short_k", kernels=_ALL_KERNELS),
    "mm_fp32": Tuner("mm_fp32", kernels=_CLASSIC_KERNELS),
}
# used when a TMA config meets operands it cannot describe and no classic config is listed
_CLASSIC = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8, "SPLIT_K": 1}


def _tf32_allowed():
    return False


if VENDOR is not None and VENDOR.device_type == "cuda":
    _tf32_allowed = getattr(torch._C, "_get_cublas_allow_tf32", None) or (
        lambda: torch.backends.cuda.matmul.allow_tf32)


class _Workspace:
    """Per-device fp32 partial tiles and zeroed arrival counters for split-K.

    Launches on one stream are ordered and every launch leaves the counters at zero, so
    one buffer pair serves all split-K GEMMs of a device. A plan keeps the pair it was
    built with (a later, larger allocation replaces the shared pair but not that one).
    Concurrent split-K GEMMs on two streams of one device would race; torch code
    rarely does that.
    """

    def __init__(self):
        self.bufs: dict = {}

    def get(self, device, ws_elems: int, locks: int):
        ws, lk = self.bufs.get(device, (None, None))
        if ws is None or ws.numel() < ws_elems:
            ws = torch.empty(max(ws_elems, 1 << 16), dtype=torch.float32, device=device)
        if lk is None or lk.numel() < locks:
            lk = torch.zeros(max(locks, 1024), dtype=torch.int32, device=device)
        self.bufs[device] = (ws, lk)
        return ws, lk


_WORKSPACE = _Workspace()
_PLANS = Plans(8192)  # exact call signature -> launcher


def _layout(s_row, s_col):
    """0: row-major (unit column stride), 1: column-major, 2: neither."""
    return 0 if s_col == 1 else (1 if s_row == 1 else 2)


def gemm(a, sa, b, sb, c, sc, x, sx, batch, M, N, K, alpha=1.0, beta=1.0):
    """c = alpha * a @ b + beta * x over ``batch`` matrices; s* are (batch, row, col) strides.

    ``x`` is None for no bias (or beta == 0: torch then ignores the bias, NaN included).
    The caller checked dtypes, devices and shapes; M, N, batch > 0 (K may be 0).
    """
    gemm_runner(a, sa, b, sb, c, sc, x, sx, batch, M, N, K, alpha, beta)(a, b, c, x, float(alpha), float(beta))
    return c


def gemm_runner(a, sa, b, sb, c, sc, x, sx, batch, M, N, K, alpha=1.0, beta=1.0):
    """The planned launch ``run(a, b, c, x, float(alpha), float(beta))`` behind :func:`gemm`
    for these arguments' signature (checks devices; plans on first sight)."""
    dtype = a.dtype
    dev = a.get_device()
    if b.get_device() != dev or c.get_device() != dev or (x is not None and x.get_device() != dev) or (
            dev >= 0 and dev != current_device()):
        raise Unsupported  # torch's device errors; Triton launches on the current device only
    ieee = dtype is not torch.float32 or not _tf32_allowed()
    key = (M, N, K, batch, dtype, sa, sb, sc, None if x is None else sx, alpha != 1, beta != 1, ieee, dev)
    run = _PLANS.get(key)
    if run is None:
        if batch > _MAX_GRID_YZ:
            raise Unsupported
        if _capturing():
            # inside CUDA graph capture nothing can be timed, and a new split-K workspace's
            # zeroing would only be recorded, not run: a plain config, planned again later
            run = _first_runner([], _plan_args(sa, sb, sc, sx, x, batch, M, N, K, alpha, beta, dtype, ieee, c))
        else:
            run = _PLANS.keep(key, _make_plan(a, sa, b, sb, c, sc, x, sx, batch, M, N, K, alpha, beta, ieee))
    return run


class CallPlans(Plans):
    """The planned GEMM of host functions over one matrix product (mm, addmm, linear) by
    their call signature: shapes, strides, dtypes and scalars.

    A model calls them with a few signatures over and over; a signature seen before skips
    the argument checks, stride bookkeeping and the plan lookup (Python path on the CPU
    stand-in, launches skipped, bf16: mm 5.8 -> 4.5 us, addmm 7.4 -> 5.0). Only 16-bit
    dtypes are kept: fp32's plan also depends on the TF32 switch, which may change
    between calls. A plan runs only on the device it was made on: its split-K workspace
    and compiled launches live there.
    """

    def launch(self, key, a, b, x):
        """Run the kept plan for ``key`` on these operands and return the output, or None
        (no plan, or operands not all on the plan's device, the current one)."""
        entry = self.get(key)
        if entry is None:
            return None
        dev = current_device()
        run, bias_used, alpha, beta, c_like, c_shape, c_strides, plan_dev = entry
        if plan_dev != dev or a.get_device() != dev or b.get_device() != dev or (
                x is not None and x.get_device() != dev):
            return None
        c = planned_output(c_like, c_shape, c_strides, a.dtype, a)
        run(a, b, c, x if bias_used else None, alpha, beta)
        return c

    def remember(self, key, a, sa, b, sb, c, x, sx, M, N, K, alpha=1, beta=1):
        """Keep the plan of a call that just ran through :func:`gemm` (one matrix, 16-bit,
        M, N > 0) with operand strides ``sa``/``sb``/``sx`` (batch, row, column) and ``c``
        a new tensor of default strides holding the M x N result."""
        if a.dtype == torch.float32 or M == 0 or N == 0 or c.stride() != default_strides(c.shape):
            return
        run = gemm_runner(a, sa, b, sb, c, (0, N, 1), x, sx, 1, M, N, K, alpha, beta)
        self.keep(key, (run, x is not None, float(alpha), float(beta), allocation_stand_in(c), c.shape, c.stride(),
                        a.get_device()))


def _plan_args(sa, sb, sc, sx, x, batch, M, N, K, alpha, beta, dtype, ieee, c):
    return (sa, sb, sc, sx, x is not None, batch, M, N, K, alpha, beta, dtype, ieee, c.device)


def _make_plan(a, sa, b, sb, c, sc, x, sx, batch, M, N, K, alpha, beta, ieee):
    """The launcher for one exact call signature, with the tuner's config for its bucket."""
    dtype = a.dtype
    tuner = _tuner_for(dtype, M, K)
    tkey = (bucket(M), bucket(N), bucket(K), str(dtype).removeprefix("torch."),
            _layout(sa[1], sa[2]), _layout(sb[1], sb[2]), batch > 1, ieee)
    args = _plan_args(sa, sb, sc, sx, x, batch, M, N, K, alpha, beta, dtype, ieee, c)
    runners: dict = {}
    scratch = []

    def tune_run(cfg):
        # time into a scratch output with c's strides: ``c`` may alias the bias (addmm_)
        if not scratch:
            scratch.append(torch.empty_strided(c.shape, c.stride(), dtype=c.dtype, device=c.device))
        run = runners.get(id(cfg))
        if run is None:
            run = runners[id(cfg)] = _runner(cfg, *args)
        run(a, b, scratch[0], x, float(alpha), float(beta))

    return _first_runner([tuner.choose(tkey, tune_run), _classic(tuner)], args)


def _tuner_for(dtype, M, K):
    """The tuner whose candidates suit this shape class (see the module docstring)."""
    if dtype == torch.float32:
        return _TUNERS["mm_fp32"]
    if M <= SMALL_M:
        return _TUNERS["mm_small_m"]
    if K <= SHORT_K:
        return _TUNERS["mm_short_k"]
    return _TUNERS["mm_mid_m"] if M <= MID_M else _TUNERS["mm"]


def _first_runner(cfgs, args):
    # the bucket's config may not fit this exact call (a TMA config and unaligned strides,
    # a split-K workspace too large for a big batch): the next one that does
    for cfg in cfgs:
        try:
            return _runner(cfg, *args)
        except _NotApplicable:
            pass
    return _runner(_CLASSIC, *args)


def _classic(tuner):
    return next((c for c in [tuner.default, *tuner.candidates]
                 if not c.get("TMA") and c.get("SPLIT_K", 1) == 1), _CLASSIC)


class _NotApplicable(Exception):
    """A config that cannot serve these operands: TMA with operands it cannot describe
    (batched, misaligned, fp32, K == 0), or split K needing more than _MAX_WORKSPACE."""


_launch_gemm = launcher(_gemm_kernel)
_MAX_WORKSPACE = 16 << 20  # fp32 elements (64 MiB) of split-K partial tiles


def _runner(cfg, sa, sb, sc, sx, has_bias, batch, M, N, K, alpha, beta, dtype, ieee, device):
    """A function (a, b, c, x, alpha, beta) launching ``cfg`` for this call signature."""
    if cfg.get("TMA"):
        return _tma_runner(cfg, sa, sb, sc, sx, has_bias, batch, M, N, K, alpha, beta, dtype, ieee, device)
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    split = cfg.get("SPLIT_K", 1)
    tiles = cdiv(M, bm) * cdiv(N, bn)
    if tiles > INT32_MAX:
        raise Unsupported
    grid = (tiles, split, batch)
    int64 = _needs_int64(sa, M, K) or _needs_int64(sb, K, N) or _needs_int64(sc, M, N) or (
        has_bias and _needs_int64(sx, M, N))
    kw = dict(
        HAS_BIAS=has_bias, SCALE_ACC=alpha != 1, SCALE_BIAS=beta != 1,
        PRECISION=("ieee" if ieee else "tf32") if dtype == torch.float32 else None,
        UPCAST=dtype == torch.bfloat16 and dot_upcast(),
        INT64=int64, EVEN_K=K % bk == 0,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg.get("GROUP_M", 8), SPLIT_K=split,
        num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 3),
    )
    ws = locks = None
    if split > 1:
        if tiles * batch * split * bm * bn > _MAX_WORKSPACE:
            raise _NotApplicable
        ws, locks = _WORKSPACE.get(device, tiles * batch * split * bm * bn, tiles * batch)
    # the plan's integers trail the per-call arguments (see Bound.prepare)
    return _per_call(_launch_gemm.bind(**kw).prepare, grid, (M, N, K, *sa, *sb, *sc, *sx), (),
                     has_bias, ws, locks, alpha, beta, dtype, device)


def _per_call(prepare, grid, ints, described, has_bias, ws, locks, alpha, beta, dtype, device):
    """``run(a, b, c, x, alpha, beta)`` over a launch of (a, b, c, x, ws, locks, alpha, beta,
    *ints) prepared by ``prepare(grid, tail, *described)``.

    Arguments the kernel does not read (the bias without HAS_BIAS, the split-K buffers
    without SPLIT_K, alpha and beta when both are 1 and so compile away) or that are the
    same at every call (the split-K buffers) are fixed in the prepared tail where the
    argument order allows, and the per-call head is (a, b, c) or (a, b, c, x): each
    tensor in the head costs its specialization at every launch (see ``unused_pointer``;
    a GEMM is a model's most frequent call).
    """
    if alpha == 1 and beta == 1:
        unused = unused_pointer(device, dtype)
        fixed = (ws if ws is not None else unused, locks if locks is not None else unused, 1.0, 1.0)
        if has_bias:
            launch = prepare(grid, (*fixed, *ints), *described)

            def run(a, b, c, x, alpha, beta):
                launch(a, b, c, x)
        else:
            launch = prepare(grid, (unused, *fixed, *ints), *described)

            def run(a, b, c, x, alpha, beta):
                launch(a, b, c)
        return run
    launch = prepare(grid, ints, *described)

    def run(a, b, c, x, alpha, beta):
        launch(a, b, c, c if x is None else x, c if ws is None else ws, c if locks is None else locks, alpha, beta)

    return run


def _tma_operand(s_batch, s_row, s_col, batch, rows, cols, b_row, b_col):
    """(shape, strides, block, transposed) of a TMA descriptor for a (batch of) (rows, cols) operand.

    TMA wants a unit innermost stride and 16-byte multiples for the others; a batch
    broadcast by a 0 stride is left to the classic kernel.
    """
    if s_col == 1 and (s_row * 2) % 16 == 0:
        shape, strides, block, transposed = [rows, cols], [s_row, 1], [b_row, b_col], False
    elif s_row == 1 and (s_col * 2) % 16 == 0:
        shape, strides, block, transposed = [cols, rows], [s_col, 1], [b_col, b_row], True
    else:
        raise _NotApplicable
    if batch > 1:
        if s_batch <= 0 or (s_batch * 2) % 16:
            raise _NotApplicable
        shape, strides, block = [batch, *shape], [s_batch, *strides], [1, *block]
    return shape, strides, block, transposed


def _tma_runner(cfg, sa, sb, sc, sx, has_bias, batch, M, N, K, alpha, beta, dtype, ieee, device):
    if TensorDescriptor is None or dtype == torch.float32 or K == 0:
        raise _NotApplicable
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    a_shape, a_st, a_block, a_t = _tma_operand(sa[0], sa[1], sa[2], batch, M, K, bm, bk)
    b_shape, b_st, b_block, b_t = _tma_operand(sb[0], sb[1], sb[2], batch, K, N, bk, bn)
    split = cfg.get("SPLIT_K", 1)
    tiles = cdiv(M, bm) * cdiv(N, bn) * batch
    if tiles * split > INT32_MAX:
        raise _NotApplicable
    grid = (min(tiles * split, sm_count(device, 4)),)
    ws = locks = None
    if split > 1:
        if tiles * split * bm * bn > _MAX_WORKSPACE:
            raise _NotApplicable
        ws, locks = _WORKSPACE.get(device, tiles * split * bm * bn, tiles)
    kw = dict(
        HAS_BIAS=has_bias, SCALE_ACC=alpha != 1, SCALE_BIAS=beta != 1,
        A_T=a_t, B_T=b_t, BATCHED=batch > 1, UPCAST=dtype == torch.bfloat16 and dot_upcast(),
        INT64=_needs_int64(sc, M, N) or (has_bias and _needs_int64(sx, M, N)),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg.get("GROUP_M", 8), SPLIT_K=split,
        FLATTEN=bool(cfg.get("FLATTEN", True)), WARP_SPECIALIZE=bool(cfg.get("WARP_SPECIALIZE", False)),
        num_warps=cfg.get("num_warps", 8), num_stages=cfg.get("num_stages", 3),
    )
    # the operands' descriptors differ from call to call only in their base addresses
    launch = _per_call(_launch_tma.bind(**kw).prepare_described, grid, (M, N, K, batch, grid[0], *sc, *sx),
                       ([(a_shape, a_st, a_block), (b_shape, b_st, b_block)],),
                       has_bias, ws, locks, alpha, beta, dtype, device)
    fallback = _first_runner([_classic(_tuner_for(dtype, M, K))],
                             (sa, sb, sc, sx, has_bias, batch, M, N, K, alpha, beta, dtype, ieee, device))

    def run(a, b, c, x, alpha, beta):
        if a.data_ptr() % 16 or b.data_ptr() % 16:  # TMA needs 16-byte aligned bases
            fallback(a, b, c, x, alpha, beta)
            return
        launch(a, b, c, x, alpha, beta)

    return run


_launch_tma = launcher(_gemm_tma_kernel) if TensorDescriptor is not None else None


def _needs_int64(strides, rows, cols):
    # element offsets inside one matrix (the batch offset is always 64-bit), with room
    # for the K-tail pointers that are computed but masked
    return (rows + 256) * abs(strides[1]) + (cols + 256) * abs(strides[2]) > INT32_MAX


def check_out(out, shape, dtype, *inputs, bias=None):
    """``out=`` cases gems leaves to torch: resizing, dtype errors, self-overlap, aliasing."""
    if out.dtype != dtype or out.shape != shape:
        raise Unsupported
    for size, stride in zip(out.shape, out.stride()):
        if stride == 0 and size > 1:
            raise Unsupported
    if out.numel() == 0:
        return
    ptr = out.untyped_storage().data_ptr()
    for t in inputs:
        if t.untyped_storage().data_ptr() == ptr:
            raise Unsupported
    if bias is not None and bias.untyped_storage().data_ptr() == ptr and not (
        bias.data_ptr() == out.data_ptr() and bias.shape == out.shape and bias.stride() == out.stride()
    ):
        raise Unsupported  # elementwise in-place (addmm_) is safe; any other overlap is not


def bias_strides(x, shape):
    """Strides that read ``x`` broadcast to ``shape`` (torch's rules); Unsupported if it does not broadcast."""
    nd, xd = len(shape), x.dim()
    if xd > nd:
        raise Unsupported
    st = [0] * nd
    xs, xst = x.shape, x.stride()
    for i in range(1, xd + 1):
        size = xs[-i]
        if size == shape[-i] and size != 1:
            st[-i] = xst[-i]
        elif size != 1:
            raise Unsupported
    return st

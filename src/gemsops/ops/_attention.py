"""Shared attention forward (online softmax over K/V tiles) for varlen prefill and SDPA.

One kernel serves three layouts, chosen by constexpr flags:
- dense batched (SDPA): element (b, m, h, d) of Q/K/V/O at ``b*s_b + m*s_m + h*s_h + d*s_d``;
- varlen: ``s_b = 0`` and the row index is offset by ``cu_seqlens[b]``;
- paged K/V (varlen with ``block_table``): key ``j`` of sequence ``b`` lives in page
  ``block_table[b, j // PAGE]`` at slot ``j % PAGE``; ``s_b`` is then the page stride.

A second kernel reads through tensor descriptors (TMA) where the layout allows: dense
[B, H, S, D] (SDPA) and packed varlen [total, H, D] without paging; configs choose it (DESC).

An additive bias (SDPA's ``attn_mask`` as torch hands it to its fused kernels: a float
tensor broadcast to [B, H, Sq, Sk], -inf where a boolean mask was False), or the boolean
mask itself (read as 0 / -inf, for SDPA served whole), is read by the pointer kernel with
any strides (0 for broadcast dims); the descriptor kernel takes none.

Causal masking is aligned bottom-right (FlashAttention-2): query ``i`` of a sequence with
``q_len`` queries and ``k_len`` keys sees keys ``j <= i + k_len - q_len``. Rows that see no
key produce zeros (and a log-sum-exp of -inf, or +inf where a bias masked them out), never
NaN. Scores are kept in base 2 (scale * log2(e) folded into one multiply) and the returned
log-sum-exp is natural-log.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..runtime import Tuner, bucket, launcher
from ._common import TL_DTYPE, cdiv, dot_upcast, needs_int64, next_pow2

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # older Triton: the pointer kernel serves every config
    TensorDescriptor = None

LOG2E = 1.4426950408889634


@triton.jit
def _kv_offsets(BT, bt_row, k_start, offs_n, stride_n, stride_page, n_mask,
                PAGED: tl.constexpr, PAGE: tl.constexpr, INT64: tl.constexpr):
    """Element offset of the rows ``offs_n`` of one sequence's keys (without head/dim)."""
    if PAGED:
        page = tl.load(BT + bt_row + offs_n // PAGE, mask=n_mask, other=0).to(tl.int64)
        return page * stride_page + (offs_n % PAGE) * stride_n
    else:
        rows = k_start + offs_n
        if INT64:
            rows = rows.to(tl.int64)
        return rows * stride_n


@triton.jit
def _softmax_step(acc, m_i, l_i, qk, qk_scale, v, offs_m_seq, offs_n, k_len, causal_off, bias,
                  MASKED: tl.constexpr, CAUSAL: tl.constexpr, PREC: tl.constexpr, POS_SCALE: tl.constexpr,
                  HAS_BIAS: tl.constexpr = False):
    """Online-softmax update with one tile of raw scores ``qk`` [M, N] and values ``v`` [N, D].

    ``qk_scale`` includes log2(e) (the exponentials are base 2). On tiles without masks and
    with a positive scale, the row maximum is taken before scaling so that scaling and
    subtracting it fuse into one FMA per score: the softmax, not the two dots, limits this
    loop on Hopper. ``bias`` (HAS_BIAS): the [M, N] additive bias in base 2, possibly -inf
    over whole rows of the tile, so those tiles take the guarded path too.
    """
    if not MASKED and POS_SCALE and not HAS_BIAS:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_sub = m_new
        p = tl.math.exp2(qk * qk_scale - m_sub[:, None])
    else:
        s = qk * qk_scale
        if HAS_BIAS:
            s = s + bias
        if MASKED:
            keep = (offs_n < k_len)[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m_seq[:, None] + causal_off)
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASKED or HAS_BIAS:
            # a row that has seen no key yet keeps m = -inf; subtract 0 instead to avoid inf - inf
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_sub = m_new
        p = tl.math.exp2(s - m_sub[:, None])
    alpha = tl.math.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PREC)
    return acc, m_new, l_i


@triton.jit
def _attn_tile(acc, m_i, l_i, q, K, V, BT, bt_row, k_base, v_base, k_start, start_n,
               offs_m_seq, offs_d, d_mask, k_len, causal_off, qk_scale,
               sk_n, sk_d, sk_page, sv_n, sv_d, sv_page, bias_rows, m_mask, sbias_n,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, PAGED: tl.constexpr, PAGE: tl.constexpr,
               EVEN_D: tl.constexpr, INT64: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
               BLOCK_N: tl.constexpr, POS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
               BOOL_BIAS: tl.constexpr):
    """One K/V tile of the online softmax; MASKED tiles apply the length and causal masks.
    ``bias_rows`` (HAS_BIAS): pointers to the bias of this tile's query rows at key 0;
    BOOL_BIAS: a boolean mask there (True: the key takes part), read as a 0 / -inf bias."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        n_mask = offs_n < k_len
    else:
        n_mask = offs_n >= 0  # constant true; lets the compiler drop the mask
    k_rows = _kv_offsets(BT, bt_row, k_start, offs_n, sk_n, sk_page, n_mask, PAGED, PAGE, INT64)
    v_rows = _kv_offsets(BT, bt_row, k_start, offs_n, sv_n, sv_page, n_mask, PAGED, PAGE, INT64)
    k_ptrs = K + k_base + k_rows[None, :] + (offs_d * sk_d)[:, None]
    v_ptrs = V + v_base + v_rows[:, None] + (offs_d * sv_d)[None, :]
    if MASKED or not EVEN_D:
        kt = tl.load(k_ptrs, mask=n_mask[None, :] & d_mask[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=n_mask[:, None] & d_mask[None, :], other=0.0)
    else:
        kt = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    if UPCAST:
        kt = kt.to(tl.float32)
        v = v.to(tl.float32)
    qk = tl.dot(q, kt, input_precision=PREC)
    bias = 0.0
    if HAS_BIAS:
        cols = offs_n.to(tl.int64) if INT64 else offs_n
        bias_ptrs = bias_rows[:, None] + (cols * sbias_n)[None, :]
        if BOOL_BIAS:
            keep = tl.load(bias_ptrs, mask=m_mask[:, None] & n_mask[None, :], other=0)
            bias = tl.where(keep != 0, 0.0, float("-inf"))
        else:
            bias = tl.load(bias_ptrs, mask=m_mask[:, None] & n_mask[None, :],
                           other=0.0).to(tl.float32) * 1.4426950408889634  # to base 2, as the scores
    return _softmax_step(acc, m_i, l_i, qk, qk_scale, v, offs_m_seq, offs_n, k_len, causal_off, bias, MASKED,
                         CAUSAL, PREC, POS_SCALE, HAS_BIAS)


@triton.jit
def _tile_coords(HEAD_CHUNK: tl.constexpr):
    """(query block, head) of this program; the longest causal row blocks come first.

    Programs start in order of axis 0, then 1. With ``HEAD_CHUNK`` heads interleaved on
    axis 0, the longest blocks of those heads all start before any shorter one (a
    longest-first schedule across heads, so the short blocks fill the tail), while the
    programs running at once still share the K/V of a few heads in L2.
    """
    if HEAD_CHUNK == 1:
        pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
        h = tl.program_id(1)
    else:
        t = tl.program_id(0)
        pid_m = tl.num_programs(0) // HEAD_CHUNK - 1 - t // HEAD_CHUNK
        h = tl.program_id(1) * HEAD_CHUNK + t % HEAD_CHUNK
    return pid_m, h


# lengths of 1 must not become constexprs (Triton specializes ints equal to 1)
@triton.jit(do_not_specialize=["seqlen_q", "seqlen_k"])
def _attn_fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K, SEQUSED_K, BT, BIAS,
    qk_scale, seqlen_q, seqlen_k,
    sq_b, sq_m, sq_h, sq_d,
    sk_b, sk_n, sk_h, sk_d,
    sv_b, sv_n, sv_h, sv_d,
    so_b, so_m, so_h, so_d,
    sl_b, sl_h, sl_m,
    sbt_b,
    sbias_b, sbias_h, sbias_m, sbias_n,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, VARLEN_Q: tl.constexpr, VARLEN_K: tl.constexpr, SEQUSED: tl.constexpr,
    PAGED: tl.constexpr, PAGE: tl.constexpr, STORE_LSE: tl.constexpr,
    INT64: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr, NUM_STAGES: tl.constexpr,
    POS_SCALE: tl.constexpr, HEAD_CHUNK: tl.constexpr, HAS_BIAS: tl.constexpr, BOOL_BIAS: tl.constexpr,
):
    pid_m, h = _tile_coords(HEAD_CHUNK)
    b = tl.program_id(2)
    kh = h // GROUP
    # lengths and packed row starts fit int32 even when given as int64 tensors
    if VARLEN_Q:
        q_start = tl.load(CU_Q + b).to(tl.int32)
        q_len = tl.load(CU_Q + b + 1).to(tl.int32) - q_start
    else:
        q_start = 0
        q_len = seqlen_q
    if pid_m * BLOCK_M >= q_len:
        return
    k_start = 0
    if VARLEN_K:
        k_start = tl.load(CU_K + b).to(tl.int32)
        k_len = tl.load(CU_K + b + 1).to(tl.int32) - k_start
    else:
        k_len = seqlen_k
    if SEQUSED:
        k_len = tl.load(SEQUSED_K + b).to(tl.int32)
    # per-program base offsets in int64 (scalar work); per-element offsets stay int32 unless INT64
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    kh64 = kh.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    m_mask = offs_m < q_len
    rows = q_start + offs_m
    if INT64:
        rows = rows.to(tl.int64)
    q_ptrs = Q + b64 * sq_b + h64 * sq_h + rows[:, None] * sq_m + (offs_d * sq_d)[None, :]
    q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    if PAGED:
        k_base = kh64 * sk_h
        v_base = kh64 * sv_h
    else:
        k_base = b64 * sk_b + kh64 * sk_h
        v_base = b64 * sv_b + kh64 * sv_h
    bt_row = b64 * sbt_b
    bias_rows = BIAS + b64 * sbias_b + h64 * sbias_h + rows * sbias_m  # used only with HAS_BIAS

    causal_off = k_len - q_len
    if CAUSAL:
        hi = tl.minimum(k_len, pid_m * BLOCK_M + BLOCK_M + causal_off)
        full = tl.minimum(k_len, pid_m * BLOCK_M + causal_off + 1)
    else:
        hi = k_len
        full = k_len
    full = tl.maximum(full, 0) // BLOCK_N * BLOCK_N
    hi = tl.maximum(hi, full)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in tl.range(0, full, BLOCK_N, num_stages=NUM_STAGES):
        acc, m_i, l_i = _attn_tile(
            acc, m_i, l_i, q, K, V, BT, bt_row, k_base, v_base, k_start, start_n,
            offs_m, offs_d, d_mask, k_len, causal_off, qk_scale,
            sk_n, sk_d, sk_b, sv_n, sv_d, sv_b, bias_rows, m_mask, sbias_n,
            False, CAUSAL, PAGED, PAGE, HEAD_DIM == BLOCK_D, INT64, UPCAST, PREC, BLOCK_N, POS_SCALE, HAS_BIAS,
            BOOL_BIAS)
    for start_n in tl.range(full, hi, BLOCK_N):
        acc, m_i, l_i = _attn_tile(
            acc, m_i, l_i, q, K, V, BT, bt_row, k_base, v_base, k_start, start_n,
            offs_m, offs_d, d_mask, k_len, causal_off, qk_scale,
            sk_n, sk_d, sk_b, sv_n, sv_d, sv_b, bias_rows, m_mask, sbias_n,
            True, CAUSAL, PAGED, PAGE, HEAD_DIM == BLOCK_D, INT64, UPCAST, PREC, BLOCK_N, POS_SCALE, HAS_BIAS,
            BOOL_BIAS)

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptrs = O + b64 * so_b + h64 * so_h + rows[:, None] * so_m + (offs_d * so_d)[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
    if STORE_LSE:
        # a row that sees no key: -inf, except where a bias masked it out: +inf there, as in
        # FlashAttention (torch's backward computes exp(score - lse), and -inf - -inf is NaN)
        lse = tl.where(empty, float("inf") if HAS_BIAS else float("-inf"),
                       (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
        tl.store(LSE + b64 * sl_b + h64 * sl_h + rows * sl_m, lse, mask=m_mask)


@triton.jit
def _desc_tile(desc, row, head, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, VARLEN: tl.constexpr, b):
    """``ROWS`` rows from ``row`` of one head: [B, H, S, D] descriptors, or packed [total, H, D] ones."""
    if VARLEN:
        return desc.load([row, head, 0]).reshape([ROWS, HEAD_DIM])
    else:
        return desc.load([b, head, row, 0]).reshape([ROWS, HEAD_DIM])


@triton.jit(do_not_specialize=["seqlen_q", "seqlen_k"])
def _attn_fwd_desc_kernel(
    q_desc, k_desc, v_desc, o_desc, O, LSE, CU_Q, CU_K, qk_scale, seqlen_q, seqlen_k, so_m, so_h, sl_b, sl_h, sl_m,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, STORE_LSE: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
    OUT_DTYPE: tl.constexpr, NUM_STAGES: tl.constexpr, POS_SCALE: tl.constexpr, HEAD_CHUNK: tl.constexpr,
    VARLEN: tl.constexpr,
):
    """Attention through tensor descriptors (TMA on Hopper and later).

    Same math as ``_attn_fwd_kernel``. Dense [B, H, S, D] inputs: descriptors zero-fill rows
    past the sequence on load and drop them on store, so only the key-length and causal
    masks remain. VARLEN (packed [total, H, D] inputs of flash_attn_varlen_func): a tile
    that runs past its sequence reads the next sequence's rows, so the output is stored
    through pointers with a row mask, and value rows past the keys are zeroed (their
    probabilities are 0, but 0 * inf would be NaN).
    """
    pid_m, h = _tile_coords(HEAD_CHUNK)
    b = tl.program_id(2)
    kh = h // GROUP
    m0 = pid_m * BLOCK_M
    if VARLEN:
        q_start = tl.load(CU_Q + b).to(tl.int32)
        q_len = tl.load(CU_Q + b + 1).to(tl.int32) - q_start
        if m0 >= q_len:
            return
        k_start = tl.load(CU_K + b).to(tl.int32)
        k_len = tl.load(CU_K + b + 1).to(tl.int32) - k_start
    else:
        q_start = 0
        q_len = seqlen_q
        k_start = 0
        k_len = seqlen_k
    q = _desc_tile(q_desc, q_start + m0, h, BLOCK_M, HEAD_DIM, VARLEN, b)
    if UPCAST:
        q = q.to(tl.float32)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    causal_off = k_len - q_len
    if CAUSAL:
        hi = tl.minimum(k_len, m0 + BLOCK_M + causal_off)
        full = tl.minimum(k_len, m0 + causal_off + 1)
    else:
        hi = k_len
        full = k_len
    full = tl.maximum(full, 0) // BLOCK_N * BLOCK_N
    hi = tl.maximum(hi, full)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for n0 in tl.range(0, full, BLOCK_N, num_stages=NUM_STAGES):
        k = _desc_tile(k_desc, k_start + n0, kh, BLOCK_N, HEAD_DIM, VARLEN, b)
        v = _desc_tile(v_desc, k_start + n0, kh, BLOCK_N, HEAD_DIM, VARLEN, b)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=PREC)
        acc, m_i, l_i = _softmax_step(acc, m_i, l_i, qk, qk_scale, v, offs_m, n0 + tl.arange(0, BLOCK_N), k_len,
                                      causal_off, 0.0, False, CAUSAL, PREC, POS_SCALE)
    for n0 in tl.range(full, hi, BLOCK_N):
        k = _desc_tile(k_desc, k_start + n0, kh, BLOCK_N, HEAD_DIM, VARLEN, b)
        v = _desc_tile(v_desc, k_start + n0, kh, BLOCK_N, HEAD_DIM, VARLEN, b)
        if VARLEN:
            v = tl.where((n0 + tl.arange(0, BLOCK_N) < k_len)[:, None], v, 0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=PREC)
        acc, m_i, l_i = _softmax_step(acc, m_i, l_i, qk, qk_scale, v, offs_m, n0 + tl.arange(0, BLOCK_N), k_len,
                                      causal_off, 0.0, True, CAUSAL, PREC, POS_SCALE)
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    if VARLEN:
        rows = (q_start + offs_m).to(tl.int64)
        offs_d = tl.arange(0, HEAD_DIM)
        tl.store(O + rows[:, None] * so_m + h.to(tl.int64) * so_h + offs_d[None, :], out.to(OUT_DTYPE),
                 mask=(offs_m < q_len)[:, None])
    else:
        rows = offs_m
        o_desc.store([b, h, m0, 0], out.to(OUT_DTYPE).reshape([1, 1, BLOCK_M, HEAD_DIM]))
    if STORE_LSE:
        lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
        tl.store(LSE + b.to(tl.int64) * sl_b + h * sl_h + rows * sl_m, lse, mask=offs_m < q_len)


# timed with a cleared L2: a prefill's Q/K/V were written before it and mostly evicted, and
# back-to-back replays flattered 64-row tiles by 8-11% (see tuner.benchmark_cold)
_fwd_tuner = Tuner("attention_fwd", kernels=[_attn_fwd_kernel, _attn_fwd_desc_kernel], cold=True)
_fwd_tuner_wide = Tuner("attention_fwd_d256", kernels=[_attn_fwd_kernel, _attn_fwd_desc_kernel], cold=True)
# fp32 runs its dots in full precision (no tensor cores): large tiles spill registers and
# take minutes to compile, so fp32 has its own small-tile candidates
_FP32_DEFAULT = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
_fwd_tuner_fp32 = Tuner("attention_fwd_fp32", kernels=[_attn_fwd_kernel, _attn_fwd_desc_kernel],
                        default=_FP32_DEFAULT, cold=True)


def _desc_layout_ok(tensors, head_dim) -> bool:
    """Tensor descriptors need a power-of-2 head, a unit last stride and 16-byte multiples
    for the other strides (the base addresses are checked at each launch)."""
    if TensorDescriptor is None or head_dim < 16 or head_dim & (head_dim - 1):
        return False
    for t in tensors:
        size = t.element_size()
        if t.stride(-1) != 1 or any((st * size) % 16 for st in t.stride()[:-1]):
            return False
    return True


def _prec(dtype) -> str:
    # fp32 inputs must not silently drop to tf32 on tensor-core GPUs
    return "ieee" if dtype == torch.float32 else "tf32"


def _no_launch(*tensors):
    pass


def attention_plan(q, k, v, out, *, q_strides, k_strides, v_strides, o_strides,
                   batch, num_heads, num_kv_heads, head_dim, max_q, causal, scale,
                   seqlen_q=0, seqlen_k=0, cu_q=None, cu_k=None, seqused_k=None,
                   block_table=None, page_size=1, lse=None, lse_strides=(0, 0, 0), dense=None, bias=None,
                   bias_strides=(0, 0, 0, 0)):
    """The forward launch for one call signature: ``plan(q, k, v, out, lse, cu_q, cu_k,
    seqused_k, block_table, bias)`` (None for absent tensors) with the tuner's config.

    Strides are (batch-or-page, row, head, dim) tuples. Shapes, strides, lengths and flags
    are fixed by the arguments given here, so a caller whose calls repeat (SDPA) can keep
    the plan and call it with new tensors of the same layout; only their addresses may
    differ. The tensors given here serve the tuner when it has to time candidates.

    ``dense``: the (q, k, v, out) ``[B, H, S, D]`` tensors of an SDPA call; configs with
    ``DESC: true`` then read them through tensor descriptors when their layout allows.
    ``bias``: an additive bias indexed (batch, head, query row, key) with ``bias_strides``
    (0 where it broadcasts), or a boolean mask indexed so (False: -inf); such calls take
    the pointer kernel and tune apart.
    """
    if batch == 0 or max_q == 0 or num_heads == 0:
        return _no_launch
    block_d = max(16, next_pow2(head_dim))
    paged = block_table is not None
    # query-length buckets from 128 to 2048 tune apart: at 512 causal rows per sequence, the
    # shortest loops favour small tiles (H100: 64x64 pointer tiles 230 TF/s against 204 for
    # 128x128 descriptors), at 2048 and more the descriptor tiles win (417-474 against 372-414)
    rows = bucket(max_q)
    key = (q.dtype, block_d, causal, paged, dense is not None, 0 if rows < 128 else min(rows, 2048))
    if bias is not None:
        key += ("bias",)  # (keys of calls without a bias keep their form: tuned caches stay valid)
    # configs with DESC read through tensor descriptors: the dense tensors of an SDPA call,
    # or the packed q/k/v of a varlen call without paging (o_strides[3] == 1: a unit last stride)
    varlen_desc = dense is None and cu_q is not None and cu_k is not None and not paged and seqused_k is None
    if bias is not None:
        desc_inputs = None
    elif dense is not None and _desc_layout_ok(dense, head_dim):
        desc_inputs = dense
    elif varlen_desc and q.dim() == 3 and k.dim() == 3 and _desc_layout_ok((q, k, v), head_dim) and o_strides[3] == 1:
        desc_inputs = (q, k, v, q)  # packed outputs are stored by pointer; the 4th is unused
    else:
        desc_inputs = None
    fixed = dict(
        q_strides=q_strides, k_strides=k_strides, v_strides=v_strides, o_strides=o_strides,
        lse_strides=lse_strides, batch=batch, num_heads=num_heads, group=num_heads // num_kv_heads,
        head_dim=head_dim, block_d=block_d, max_q=max_q, causal=bool(causal), qk_scale=scale * LOG2E,
        seqlen_q=seqlen_q, seqlen_k=seqlen_k, paged=paged, page_size=page_size,
        bt_stride=block_table.stride(0) if paged else 0, dtype=q.dtype, out_dtype=out.dtype,
        store_lse=lse is not None, varlen_q=cu_q is not None, varlen_k=cu_k is not None,
        sequsedk=seqused_k is not None, varlen_desc=desc_inputs is not None and dense is None,
        int64=needs_int64(q, out, bias) or (not paged and needs_int64(k, v)),
        has_bias=bias is not None, bool_bias=bias is not None and bias.dtype == torch.bool,
        bias_strides=tuple(bias_strides),
        described=None if desc_inputs is None else [
            (list(t.shape), list(t.stride())) for t in desc_inputs],
    )
    plans: dict = {}

    def plan_for(cfg):
        plan = plans.get(id(cfg))
        if plan is None:
            plan = plans[id(cfg)] = _launch_plan(cfg, **fixed)
        return plan

    def run(cfg):
        plan_for(cfg)(q, k, v, out, lse, cu_q, cu_k, seqused_k, block_table, bias)

    # heads wider than 128 get their own configs: a 128-row Q tile with 256-wide K/V
    # tiles exceeds the register and shared-memory budget
    if q.dtype == torch.float32:
        tuner = _fwd_tuner_fp32
    else:
        tuner = _fwd_tuner_wide if block_d > 128 else _fwd_tuner
    return plan_for(tuner.choose(key, run))


def _launch_plan(cfg, *, q_strides, k_strides, v_strides, o_strides, lse_strides, batch, num_heads, group,
                 head_dim, block_d, max_q, causal, qk_scale, seqlen_q, seqlen_k, paged, page_size, bt_stride,
                 dtype, out_dtype, store_lse, varlen_q, varlen_k, sequsedk, varlen_desc, int64, described, has_bias,
                 bool_bias, bias_strides):
    """``cfg``'s launch for one call signature (see :func:`attention_plan`)."""
    block_m = cfg.get("BLOCK_M", 64)
    block_n = cfg.get("BLOCK_N", 64)
    if max_q <= 16:
        block_m = 16  # decode-like batches: a 16-row tile is the smallest dot
    # without a causal mask every query block costs the same: nothing to reorder
    chunk = cfg.get("HEAD_CHUNK", 1) if causal else 1
    if num_heads % chunk:
        chunk = 1
    grid = (cdiv(max_q, block_m) * chunk, num_heads // chunk, batch)
    common = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
                  STORE_LSE=store_lse, UPCAST=dot_upcast(), PREC=_prec(dtype), NUM_STAGES=cfg.get("num_stages", 2),
                  POS_SCALE=qk_scale > 0, HEAD_CHUNK=chunk,
                  num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 2))
    by_pointer = launcher(_attn_fwd_kernel).bind(
        BLOCK_D=block_d, VARLEN_Q=varlen_q, VARLEN_K=varlen_k, SEQUSED=sequsedk, PAGED=paged, PAGE=page_size,
        INT64=int64, HAS_BIAS=has_bias, BOOL_BIAS=bool_bias, **common,
    ).prepare(grid, (qk_scale, seqlen_q, seqlen_k, *q_strides, *k_strides, *v_strides, *o_strides, *lse_strides,
                     bt_stride, *bias_strides))

    def launch_by_pointer(q, k, v, out, lse, cu_q, cu_k, seqused_k, block_table, bias=None):
        # absent tensors: any pointer will do, the flags keep the kernel from reading them
        by_pointer(q, k, v, out, q if lse is None else lse, q if cu_q is None else cu_q,
                   q if cu_k is None else cu_k, q if seqused_k is None else seqused_k,
                   q if block_table is None else block_table, q if bias is None else bias)

    if not cfg.get("DESC") or described is None:
        return launch_by_pointer
    blocks = ([1, 1, block_m, head_dim], [1, 1, block_n, head_dim]) if len(described[0][0]) == 4 else \
        ([block_m, 1, head_dim], [block_n, 1, head_dim])
    by_descriptor = launcher(_attn_fwd_desc_kernel).bind(
        OUT_DTYPE=TL_DTYPE[out_dtype], VARLEN=varlen_desc, **common,
    ).prepare_described(grid, (qk_scale, seqlen_q, seqlen_k, o_strides[1], o_strides[2], *lse_strides),
                        [(shape, strides, blocks[0 if j in (0, 3) else 1])
                         for j, (shape, strides) in enumerate(described)])

    def launch_by_descriptor(q, k, v, out, lse, cu_q, cu_k, seqused_k, block_table, bias=None):
        stored = q if varlen_desc else out
        if (q.data_ptr() | k.data_ptr() | v.data_ptr() | stored.data_ptr()) & 15:
            # tensor descriptors need 16-byte aligned base addresses
            launch_by_pointer(q, k, v, out, lse, cu_q, cu_k, seqused_k, block_table)
            return
        by_descriptor(q, k, v, stored, out, q if lse is None else lse, q if cu_q is None else cu_q,
                      q if cu_k is None else cu_k)

    return launch_by_descriptor


def torch_attention(q, k, v, causal, scale):
    """Plain PyTorch attention for one sequence: q [Sq, H, D], k/v [Sk, Hkv, D] (fallbacks)."""
    sq, h, _ = q.shape
    sk, hkv, _ = k.shape
    if sk == 0:
        return torch.zeros_like(q)
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf, vf = (t.to(dt).transpose(0, 1) for t in (q, k, v))
    if hkv != h:
        kf = kf.repeat_interleave(h // hkv, 0)
        vf = vf.repeat_interleave(h // hkv, 0)
    s = torch.matmul(qf, kf.transpose(1, 2)) * scale
    if causal:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (sk - sq), float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    den = p.sum(-1, keepdim=True)
    o = torch.matmul(p, vf) / torch.where(den == 0, torch.ones_like(den), den)
    return o.transpose(0, 1).to(q.dtype)


def default_scale(head_dim: int, scale) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)

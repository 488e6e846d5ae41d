"""paged_attention: decode attention (one query token per sequence) over a paged KV cache.

Layouts (``kv_layout``):
- "flash": K and V ``[num_blocks, block_size, num_kv_heads, head_size]``, any strides, so
  HND views (``[num_blocks, num_kv_heads, block_size, head_size]`` permuted) work too;
- "vllm": vLLM's original K ``[num_blocks, num_kv_heads, head_size // x, block_size, x]``
  and V ``[num_blocks, num_kv_heads, head_size, block_size]``.
Both reduce to one addressing scheme: element (page, slot, head, d) at
``page*s_page + slot*s_slot + head*s_head + (d // X)*s_dhi + (d % X)*s_dlo``.

Whole K/V tiles are read without masks and only a segment's last, partial tile is masked:
masks that vary per token keep Triton from vectorizing. The vLLM layout also needs hints
(its K groups are x-aligned, its V tokens adjacent within a page) and 3-D tiles that follow
its memory order ([groups, tokens, x] for K, [pages, head dim, tokens] for V); without them
it read at 43% of copy bandwidth, with them 95% (H100, B64 L4096).

One program owns one (sequence, KV head) pair and all query heads of its group, so every
K/V tile is read once per group. When there are few pairs, each context is split into
segments handled by separate programs (flash-decoding) that write a partial output and
its log-sum-exp. The last program of a pair to finish (an arrival counter per pair) merges
them, which spares a second launch (config FUSED_MERGE; otherwise a merge kernel runs
after). Sequences of length 0 give zeros.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..runtime import VENDOR, Plans, Tuner, bucket, capturing, launcher, on_vendor_device
from ._common import cdiv, dot_upcast, kernel_dtype_ok, next_pow2, sm_count

__all__ = ["paged_attention"]  # decode() is also used by flash_attn_varlen_func

LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(acc, m_i, l_i, q, k_head, v_head, bt_row, k_d, v_d, d_mask, n0, end, seq_len, qk_scale, slope,
                 sk_page, sk_slot, sk_dhi, sv_page, sv_slot, sv_dhi,
                 PAGE: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_ALIBI: tl.constexpr,
                 UPCAST: tl.constexpr, PREC: tl.constexpr, K_RUN: tl.constexpr, K_GROUPS: tl.constexpr,
                 V_RUN: tl.constexpr, V_PAGES: tl.constexpr, MASKED: tl.constexpr):
    """One K/V tile of the online softmax. Unmasked tiles (every token valid) are the loop's
    body; the masked one is the segment's last, partial tile."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    if MASKED:
        n_mask = offs_n < end
        page = tl.load(bt_row + offs_n // PAGE, mask=n_mask, other=0).to(tl.int64)
    else:
        page = tl.load(bt_row + offs_n // PAGE).to(tl.int64)
    slot = offs_n % PAGE
    k_rows = page * sk_page + slot * sk_slot
    v_rows = page * sv_page + slot * sv_slot
    if K_RUN > 1:
        # vLLM's original K layout: each token's groups of x elements start at multiples of x
        # (the host checks the strides); Triton itself only knows strides divisible by 16
        k_rows = tl.multiple_of(k_rows, K_RUN)
    if MASKED:
        kt = tl.load(k_head + k_rows[None, :] + k_d[:, None], mask=n_mask[None, :] & d_mask[:, None], other=0.0)
        v = tl.load(v_head + v_rows[:, None] + v_d[None, :], mask=n_mask[:, None] & d_mask[None, :], other=0.0)
    else:
        if V_RUN > 1:
            # vLLM's original V layout: a page's tokens are adjacent, so each run of V_RUN
            # tokens of a whole tile is contiguous and starts at a multiple of V_RUN (the host
            # checks the strides). Triton cannot see that through the loaded page numbers,
            # and without it loads V one element at a time
            v_rows = tl.max_contiguous(tl.multiple_of(v_rows, V_RUN), V_RUN)
        if K_GROUPS:
            # vLLM's original K layout read as [groups, tokens, x]: a warp's loads then walk
            # along the tokens of one group, which are adjacent in a page (x elements each),
            # instead of across groups that lie PAGE * x elements apart
            offs_g = tl.arange(0, HEAD_DIM // K_RUN)
            offs_x = tl.arange(0, K_RUN)
            k3 = tl.load(k_head + (offs_g * sk_dhi)[:, None, None] + k_rows[None, :, None] + offs_x[None, None, :])
            kt = tl.reshape(tl.permute(k3, (0, 2, 1)), (HEAD_DIM, BLOCK_N))
        else:
            kt = tl.load(k_head + k_rows[None, :] + k_d[:, None], mask=d_mask[:, None], other=0.0)
        if V_PAGES:
            # and V of that layout read as [pages, head dim, tokens]: a page's V is one block
            offs_p = tl.arange(0, BLOCK_N // PAGE)
            offs_s = tl.arange(0, PAGE)
            v_page = tl.load(bt_row + n0 // PAGE + offs_p).to(tl.int64) * sv_page
            v3 = tl.load(v_head + v_page[:, None, None] + (tl.arange(0, HEAD_DIM) * sv_dhi)[None, :, None]
                         + offs_s[None, None, :])
            v = tl.reshape(tl.permute(v3, (0, 2, 1)), (BLOCK_N, HEAD_DIM))
        else:
            v = tl.load(v_head + v_rows[:, None] + v_d[None, :], mask=d_mask[None, :], other=0.0)
    if UPCAST:
        kt = kt.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, kt, input_precision=PREC) * qk_scale
    if HAS_ALIBI:
        s += slope[:, None] * (offs_n - seq_len + 1).to(tl.float32)[None, :]
    if MASKED:
        s = tl.where(n_mask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # every tile holds at least one valid key, so m_new is finite here
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["num_kv_heads", "tokens_per_split"])
def _paged_decode_kernel(
    Q, K, V, BT, SEQ, ALIBI, O, PART, CU_Q, COUNTERS,
    qk_scale, num_kv_heads, tokens_per_split, part_l_off,
    sq_b, sq_h, sq_d,
    sk_page, sk_slot, sk_head, sk_dhi, sk_dlo,
    sv_page, sv_slot, sv_head, sv_dhi, sv_dlo,
    sbt_b, so_b, so_h, so_d,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, KX: tl.constexpr, VX: tl.constexpr,
    NUM_SPLITS: tl.constexpr, HAS_ALIBI: tl.constexpr, UPCAST: tl.constexpr, PREC: tl.constexpr,
    VARLEN_Q: tl.constexpr, NUM_STAGES: tl.constexpr, K_RUN: tl.constexpr, K_GROUPS: tl.constexpr,
    V_RUN: tl.constexpr, V_PAGES: tl.constexpr, FUSED_MERGE: tl.constexpr, MERGE_H: tl.constexpr,
    MERGE_S: tl.constexpr,
):
    pair = tl.program_id(0)
    split = tl.program_id(1)
    b = pair // num_kv_heads
    kh = pair % num_kv_heads
    b64 = b.to(tl.int64)
    # VARLEN_Q: packed queries of flash_attn_varlen_func, at most one per sequence; the
    # query (and output) row of sequence b is cu_seqlens_q[b], and a sequence without one is skipped
    if VARLEN_Q:
        q_row = tl.load(CU_Q + b).to(tl.int64)
        if tl.load(CU_Q + b + 1) == q_row:
            return
    else:
        q_row = b64
    seq_len = tl.load(SEQ + b).to(tl.int32)
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, seq_len)

    offs_g = tl.arange(0, BLOCK_G)
    g_mask = offs_g < GROUP
    heads = kh * GROUP + offs_g
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q = tl.load(Q + q_row * sq_b + heads[:, None] * sq_h + (offs_d * sq_d)[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    if HAS_ALIBI:
        slope = tl.load(ALIBI + heads, mask=g_mask, other=0.0).to(tl.float32) * 1.4426950408889634
    else:
        slope = 0.0

    k_d = (offs_d // KX) * sk_dhi + (offs_d % KX) * sk_dlo
    if K_RUN > 1:
        k_d = tl.max_contiguous(tl.multiple_of(k_d, K_RUN), K_RUN)
    v_d = (offs_d // VX) * sv_dhi + (offs_d % VX) * sv_dlo
    k_head = K + kh.to(tl.int64) * sk_head
    v_head = V + kh.to(tl.int64) * sv_head
    bt_row = BT + b64 * sbt_b

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    # whole tiles without masks (so loads vectorize), then the partial one; the host makes
    # tokens_per_split a multiple of BLOCK_N, so every tile starts at a multiple of BLOCK_N
    full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N
    for n0 in tl.range(start, full_end, BLOCK_N, num_stages=NUM_STAGES):
        acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_head, v_head, bt_row, k_d, v_d, d_mask, n0, end, seq_len,
                                     qk_scale, slope, sk_page, sk_slot, sk_dhi, sv_page, sv_slot, sv_dhi,
                                     PAGE, BLOCK_N, HEAD_DIM, HAS_ALIBI, UPCAST, PREC,
                                     K_RUN, K_GROUPS, V_RUN, V_PAGES, False)
    if full_end < end:
        acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_head, v_head, bt_row, k_d, v_d, d_mask, full_end, end,
                                     seq_len, qk_scale, slope, sk_page, sk_slot, sk_dhi, sv_page, sv_slot, sv_dhi,
                                     PAGE, BLOCK_N, HEAD_DIM, HAS_ALIBI, UPCAST, PREC,
                                     K_RUN, False, V_RUN, False, True)

    if NUM_SPLITS == 1:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + q_row * so_b + heads[:, None] * so_h + (offs_d * so_d)[None, :],
                 out.to(O.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])
    else:
        # partials in PART: [B, Hq, NUM_SPLITS, BLOCK_D] normalised outputs, then from
        # part_l_off [B, Hq, NUM_SPLITS] base-2 log-sum-exps (-inf for an empty segment)
        row = (b64 * num_kv_heads * GROUP + heads) * NUM_SPLITS + split
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(tl.where(l_i == 0.0, 1.0, l_i)))
        tl.store(PART + row[:, None] * BLOCK_D + offs_d[None, :], out, mask=g_mask[:, None])
        tl.store(PART + part_l_off + row, lse, mask=g_mask)
        if FUSED_MERGE:
            # every thread's partial stores must precede the (single-thread) release below;
            # the program that arrives last sees all of them and merges the pair's heads
            tl.debug_barrier()
            arrived = tl.atomic_add(COUNTERS + pair, 1, sem="acq_rel")
            if arrived == NUM_SPLITS - 1:
                h0 = kh * GROUP
                _merge_splits(PART, part_l_off, O, b64 * num_kv_heads * GROUP + h0, q_row, h0, so_b, so_h, so_d,
                              NUM_SPLITS, GROUP, MERGE_H, MERGE_S, HEAD_DIM, BLOCK_D)
                tl.atomic_xchg(COUNTERS + pair, 0)  # zero again for the next launch


@triton.jit
def _merge_splits(PART, part_l_off, O, row0, q_row, h0, so_b, so_h, so_d,
                  NUM_SPLITS: tl.constexpr, HEADS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_S: tl.constexpr,
                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Output heads h0 .. h0 + HEADS - 1 of query row ``q_row`` from their NUM_SPLITS partials
    (rows ``row0`` on of PART): all heads at once, BLOCK_S partials per step with a running
    maximum, so that the merge is a few rounds of loads and adds few registers when the
    decode kernel runs it.

    Loads bypass L1 (.cg): in the fused merge the partials were written by other programs.
    """
    offs_h = tl.arange(0, BLOCK_H)
    h_mask = offs_h < HEADS
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    base = (row0 + offs_h).to(tl.int64) * NUM_SPLITS
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    den = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for s0 in range(0, NUM_SPLITS, BLOCK_S):
        idx = base[:, None] + (s0 + offs_s)[None, :]
        mask = h_mask[:, None] & (s0 + offs_s < NUM_SPLITS)[None, :]
        lse = tl.load(PART + part_l_off + idx, mask=mask, other=float("-inf"), cache_modifier=".cg")
        o = tl.load(PART + idx[:, :, None] * BLOCK_D + offs_d[None, None, :], mask=mask[:, :, None], other=0.0,
                    cache_modifier=".cg")
        m_new = tl.maximum(m, tl.max(lse, 1))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)  # every segment so far empty
        rescale = tl.math.exp2(m - m_sub)
        w = tl.math.exp2(lse - m_sub[:, None])
        acc = acc * rescale[:, None] + tl.sum(o * w[:, :, None], 1)
        den = den * rescale + tl.sum(w, 1)
        m = m_new
    out = acc / tl.where(den == 0.0, 1.0, den)[:, None]
    tl.store(O + q_row * so_b + (h0 + offs_h)[:, None] * so_h + (offs_d * so_d)[None, :], out.to(O.dtype.element_ty),
             mask=h_mask[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def _merge_kernel(PART, O, CU_Q, part_l_off, num_heads, so_b, so_h, so_d,
                  NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_D: tl.constexpr, VARLEN_Q: tl.constexpr):
    row = tl.program_id(0)  # b * num_heads + h
    b = row // num_heads
    h = row % num_heads
    if VARLEN_Q:
        q_row = tl.load(CU_Q + b).to(tl.int64)
        if tl.load(CU_Q + b + 1) == q_row:
            return
    else:
        q_row = b.to(tl.int64)
    _merge_splits(PART, part_l_off, O, row, q_row, h, so_b, so_h, so_d, NUM_SPLITS, 1, 1, BLOCK_S, HEAD_DIM, BLOCK_D)


_tuner = Tuner("paged_decode", kernels=[_paged_decode_kernel, _attend_tile, _merge_splits, _merge_kernel])


def _layout_strides(key_cache, value_cache, kv_layout):
    """(num_kv_heads, page size, K strides, V strides, KX, VX) for the two cache layouts."""
    if kv_layout == "flash":
        if key_cache.dim() != 4 or value_cache.shape != key_cache.shape:
            return None
        nb, page, hkv, d = key_cache.shape
        ks, vs = key_cache.stride(), value_cache.stride()
        return hkv, page, d, (ks[0], ks[1], ks[2], ks[3], 0), (vs[0], vs[1], vs[2], vs[3], 0), 1, 1
    if kv_layout == "vllm":
        if key_cache.dim() != 5 or value_cache.dim() != 4:
            return None
        nb, hkv, dx, page, x = key_cache.shape
        d = dx * x
        if tuple(value_cache.shape) != (nb, hkv, d, page):
            return None
        ks, vs = key_cache.stride(), value_cache.stride()
        return hkv, page, d, (ks[0], ks[3], ks[1], ks[2], ks[4]), (vs[0], vs[3], vs[1], vs[2], 0), x, 1
    raise ValueError(f"paged_attention: kv_layout must be 'flash' or 'vllm', got {kv_layout!r}")


def paged_attention(query, key_cache, value_cache, block_tables, seq_lens, *, scale=None,
                    kv_layout="flash", alibi_slopes=None, out=None):
    """Decode attention of one query token per sequence over a paged KV cache."""
    lay = _layout_strides(key_cache, value_cache, kv_layout)
    if lay is None:
        raise ValueError(f"paged_attention: cache shapes {tuple(key_cache.shape)} / {tuple(value_cache.shape)} "
                         f"do not match kv_layout={kv_layout!r}")
    hkv, page, d, ks, vs, kx, vx = lay
    num_seqs, num_heads, head_dim = query.shape
    if head_dim != d or num_heads % hkv != 0:
        raise ValueError(f"paged_attention: query {tuple(query.shape)} does not fit {hkv} KV heads of size {d}")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if out is None:
        out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    if not _kernel_ok(query, key_cache, value_cache, block_tables, seq_lens, alibi_slopes, out):
        out.copy_(_torch_paged(query, key_cache, value_cache, block_tables, seq_lens, scale, kv_layout,
                               alibi_slopes))
        return out
    decode(query, key_cache, value_cache, block_tables, seq_lens, scale, lay, kv_layout, alibi_slopes, out)
    return out


def decode(query, key_cache, value_cache, block_tables, seq_lens, scale, lay, kv_layout, alibi_slopes, out,
           cu_q=None):
    """Launch the split-KV decode on inputs already validated by the caller.

    With ``cu_q`` the queries are packed varlen rows (at most one per sequence) and the
    batch size is ``len(cu_q) - 1``. Everything but the tensors' addresses and the scale
    is planned once per call signature: a decode step of a serving loop repeats one.
    """
    varlen = cu_q is not None
    num_seqs = cu_q.shape[0] - 1 if varlen else query.shape[0]
    sig = (lay, kv_layout, query.shape, query.stride(), query.dtype, out.stride(), block_tables.shape,
           block_tables.stride(0), alibi_slopes is not None, varlen, num_seqs, query.device)
    plan = _PLANS.get(sig)
    if plan is None:
        plan = _plan(sig, query, key_cache, value_cache, block_tables, seq_lens, lay, alibi_slopes, out, cu_q)
        if plan is None:
            return
    _launch(plan, query, key_cache, value_cache, block_tables, seq_lens, scale, alibi_slopes, out, cu_q)


def _launch(plan, query, key_cache, value_cache, block_tables, seq_lens, scale, alibi_slopes, out, cu_q):
    decode_launch, merge_launch, part_elems, counters = plan
    # one fp32 buffer for the partial outputs and their log-sum-exps (see the kernel)
    part = out if part_elems == 0 else torch.empty(part_elems, dtype=torch.float32, device=query.device)
    cu = seq_lens if cu_q is None else cu_q
    decode_launch(query, key_cache, value_cache, block_tables, seq_lens,
                  query if alibi_slopes is None else alibi_slopes, out, part, cu,
                  out if counters is None else counters, scale * LOG2E)
    if merge_launch is not None:
        merge_launch(part, out, cu)


class _Counters:
    """Per-device int32 arrival counters of the fused merge, zero between launches.

    Every launch leaves the counters it used at zero, so launches on one stream share one
    buffer (as split-K GEMMs share theirs); two decodes running at once on two streams of
    one device would race. A plan keeps the buffer it was built with.
    """

    def __init__(self):
        self.bufs: dict = {}

    def get(self, device, n: int):
        """A zeroed buffer of at least ``n`` counters, or None while a CUDA graph is being
        captured and none is large enough (an allocation then would only be recorded)."""
        buf = self.bufs.get(device)
        if buf is None or buf.numel() < n:
            if capturing():
                return None
            buf = self.bufs[device] = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        return buf


_COUNTERS = _Counters()
_PLANS = Plans()  # call signature -> (decode launch, merge launch or None, partials' size, counters or None)


def _plan(sig, query, key_cache, value_cache, block_tables, seq_lens, lay, alibi_slopes, out, cu_q):
    hkv, page, d, ks, vs, kx, vx = lay
    kv_layout, num_seqs = sig[1], sig[-2]
    num_heads, head_dim = query.shape[1], query.shape[2]
    if num_seqs == 0 or num_heads == 0:
        return None
    group = num_heads // hkv
    block_g = max(16, next_pow2(group))
    block_d = max(16, next_pow2(head_dim))
    max_ctx = block_tables.shape[1] * page
    pairs = num_seqs * hkv
    sms = sm_count(query.device, 4)  # 4 under the interpreter: a nominal count keeps splits testable
    ints = (query.stride(0), query.stride(1), query.stride(2), *ks, *vs,
            block_tables.stride(0), out.stride(0), out.stride(1), out.stride(2))
    # K groups of x adjacent elements (vLLM's original layout), each group's start aligned to
    # x elements when every stride but the innermost is a multiple of x
    k_run = kx if kx > 1 and ks[4] == 1 and all(st % kx == 0 for st in (ks[0], ks[1], ks[2], ks[3])) else 0
    fixed = dict(GROUP=group, BLOCK_G=block_g, HEAD_DIM=head_dim, BLOCK_D=block_d, PAGE=page, KX=kx, VX=vx,
                 HAS_ALIBI=alibi_slopes is not None, UPCAST=dot_upcast(),
                 PREC="ieee" if query.dtype == torch.float32 else "tf32", VARLEN_Q=cu_q is not None)

    def setup(cfg):
        block_n = cfg.get("BLOCK_N", 64)
        # splits: enough programs for `waves` programs per SM, each segment at least
        # `min_tokens` long (shorter segments spend more on the merge than they save)
        target = cfg.get("waves", 4) * sms
        splits = 1
        if pairs < target and max_ctx > block_n:
            splits = min(cdiv(target, pairs), cdiv(max_ctx, cfg.get("min_tokens", 256)),
                         cfg.get("max_splits", 128))
            splits = max(splits, 1)
        per_split = cdiv(cdiv(max_ctx, splits), block_n) * block_n
        splits = cdiv(max_ctx, per_split) if max_ctx > 0 else 1
        stages = cfg.get("num_stages", 2)
        # V tokens adjacent within a page (vLLM's original layout): runs of this many tokens
        # are contiguous and aligned in every whole tile, which the kernel tells Triton
        v_run = min(page, block_n) if vs[1] == 1 and vs[0] % min(page, block_n) == 0 else 0
        # the vLLM layout's K read group by group and V page by page (3-D tiles; their aranges
        # need powers of 2). Config options K_GROUPS / V_PAGES, on unless a config says false
        pow2 = head_dim == block_d and page & (page - 1) == 0
        k_groups = bool(k_run) and pow2 and cfg.get("K_GROUPS", True)
        v_pages = v_run == page and pow2 and cfg.get("V_PAGES", True)
        # the fused merge takes all heads of a group at once, MERGE_S partials per step
        # (registers: MERGE_H * MERGE_S rows of BLOCK_D floats); the merge kernel one head
        merge_h = next_pow2(group)
        merge_s = min(next_pow2(splits), max(1, 64 // merge_h))
        counters = None
        if splits > 1 and cfg.get("FUSED_MERGE", True):
            counters = _COUNTERS.get(query.device, pairs)
        bound = launcher(_paged_decode_kernel).bind(
            **fixed, BLOCK_N=block_n, NUM_SPLITS=splits, NUM_STAGES=stages, K_RUN=k_run, K_GROUPS=k_groups,
            V_RUN=v_run, V_PAGES=v_pages, FUSED_MERGE=counters is not None, MERGE_H=merge_h, MERGE_S=merge_s,
            num_warps=cfg.get("num_warps", 4), num_stages=stages)
        rows = num_seqs * num_heads * splits
        part_l_off = rows * block_d if splits > 1 else 0
        decode_launch = bound.prepare((pairs, splits), (hkv, per_split, part_l_off, *ints))
        if splits == 1:
            return decode_launch, None, 0, None
        part_elems = rows * (block_d + 1)
        if counters is not None:
            return decode_launch, None, part_elems, counters
        # the merge of the segments' partial outputs: one program per (sequence, query head)
        merge_launch = launcher(_merge_kernel).bind(
            NUM_SPLITS=splits, BLOCK_S=min(next_pow2(splits), 64), HEAD_DIM=head_dim, BLOCK_D=block_d,
            VARLEN_Q=cu_q is not None, num_warps=4,
        ).prepare((num_seqs * num_heads,), (part_l_off, num_heads, out.stride(0), out.stride(1), out.stride(2)))
        return decode_launch, merge_launch, part_elems, None

    def run(cfg):
        # a tuning trial writes a scratch output with out's strides (the plan's integer
        # arguments), so an out that aliases the query is not overwritten mid-tuning
        scratch = torch.empty_strided(out.shape, out.stride(), dtype=out.dtype, device=out.device)
        _launch(setup(cfg), query, key_cache, value_cache, block_tables, seq_lens, 1.0, alibi_slopes, scratch, cu_q)

    # with fewer (sequence, KV head) pairs than SMs the best split depends on how few and
    # how long: B1 x 32k and B8 x 16k contexts (8 and 64 pairs) want different configs
    few = pairs < sms
    key = (query.dtype, block_d, page, block_g, kv_layout, few,
           bucket(pairs) if few else 0, bucket(max_ctx) if few else 0)
    cfg = _tuner.choose(key, run)
    plan = setup(cfg)
    return _PLANS.keep(sig, plan)


def _kernel_ok(query, key_cache, value_cache, block_tables, seq_lens, alibi_slopes, out) -> bool:
    if not on_vendor_device(query, key_cache, value_cache, block_tables, seq_lens, alibi_slopes, out):
        return False
    dt = query.dtype
    if dt not in (torch.float16, torch.bfloat16, torch.float32) or not kernel_dtype_ok(dt):
        return False
    if key_cache.dtype != dt or value_cache.dtype != dt or out.dtype != dt or query.shape[-1] > 256:
        return False
    if block_tables.dtype not in (torch.int32, torch.int64) or seq_lens.dtype not in (torch.int32, torch.int64):
        return False
    if block_tables.dim() != 2 or block_tables.stride(1) != 1 or not seq_lens.is_contiguous():
        return False
    if alibi_slopes is not None and (not alibi_slopes.is_contiguous() or alibi_slopes.numel() != query.shape[1]):
        return False
    return tuple(out.shape) == tuple(query.shape)


def gather_kv(key_cache, value_cache, block_table_row, n, kv_layout):
    """Contiguous ``[n, num_kv_heads, head_size]`` K and V of one sequence (torch code)."""
    if n == 0:
        if kv_layout == "flash":
            hkv, d = key_cache.shape[2], key_cache.shape[3]
        else:
            hkv, d = key_cache.shape[1], key_cache.shape[2] * key_cache.shape[4]
        e = key_cache.new_zeros((0, hkv, d))
        return e, e
    if kv_layout == "flash":
        page = key_cache.shape[1]
        pages = block_table_row[: (n + page - 1) // page].long()
        return key_cache[pages].flatten(0, 1)[:n], value_cache[pages].flatten(0, 1)[:n]
    nb, hkv, dx, page, x = key_cache.shape
    pages = block_table_row[: (n + page - 1) // page].long()
    k = key_cache[pages].permute(0, 3, 1, 2, 4).reshape(-1, hkv, dx * x)[:n]
    v = value_cache[pages].permute(0, 3, 1, 2).reshape(-1, hkv, dx * x)[:n]
    return k, v


def _torch_paged(query, key_cache, value_cache, block_tables, seq_lens, scale, kv_layout, alibi_slopes):
    """Plain PyTorch path for inputs the kernel does not take (other devices, dtypes)."""
    dt = torch.float64 if query.dtype == torch.float64 else torch.float32
    out = torch.zeros(query.shape, dtype=query.dtype, device=query.device)
    for b, n in enumerate(seq_lens.tolist()):
        if n == 0:
            continue
        k, v = gather_kv(key_cache, value_cache, block_tables[b], n, kv_layout)
        group = query.shape[1] // k.shape[1]
        k = k.to(dt).repeat_interleave(group, 1)
        v = v.to(dt).repeat_interleave(group, 1)
        s = torch.einsum("hd,nhd->hn", query[b].to(dt), k) * scale
        if alibi_slopes is not None:
            pos = torch.arange(n, device=query.device, dtype=dt) - (n - 1)
            s = s + alibi_slopes.to(dt)[:, None] * pos[None, :]
        out[b] = torch.einsum("hn,nhd->hd", torch.softmax(s, -1), v).to(query.dtype)
    return out

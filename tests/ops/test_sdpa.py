"""SDPA's fused forwards: the kernel directly, each aten entry point against torch's own, and
F.scaled_dot_product_attention through dispatch (gems' forward, torch's backward)."""
import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import gemsops
from gemsops.ops import sdpa as sdpa_ops
from gemsops.ops import sdpa_flash_forward
from gemsops.runtime.oplog import read_log
from gemsops.runtime.registry import families
from tests.ops.attention_ref import ref_attention, ref_lse
from tests.util import ON_GPU, SeenOps, assert_close, randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _ref_bhsd(q, k, v, causal, scale=None):
    """[B, H, S, D] reference through the per-sequence [S, H, D] helper."""
    outs = [ref_attention(q[b].transpose(0, 1), k[b].transpose(0, 1), v[b].transpose(0, 1),
                          causal=causal, scale=scale).transpose(0, 1) for b in range(q.shape[0])]
    return torch.stack(outs)


def _ref_lse(q, k, causal, scale=None):
    return torch.stack([ref_lse(q[b].transpose(0, 1), k[b].transpose(0, 1), causal=causal, scale=scale)
                        for b in range(q.shape[0])])


def _tol_scale(dtype):
    return 2.0 if dtype == torch.bfloat16 else 4.0


# (B, Hq, Hkv, Sq, Sk, D)
SHAPES = [(1, 2, 2, 5, 5, 16), (2, 4, 1, 7, 7, 24), (1, 8, 2, 3, 20, 32)]


def _force_config(monkeypatch, cfg):
    """Every attention tuner answers ``cfg``; plans kept by earlier calls are set aside."""
    from gemsops.ops import _attention
    from gemsops.runtime import Plans
    for tuner in (_attention._fwd_tuner, _attention._fwd_tuner_fp32):
        monkeypatch.setattr(tuner, "choose", lambda key, run: cfg)
    monkeypatch.setattr(sdpa_ops, "_PLANS", Plans())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,causal", [(s, c) for s in SHAPES for c in (False, True) if not c or s[3] == s[4]])
def test_kernel_direct(dtype, causal, shape):
    # SDPA's flash path only takes square causal attention (varlen tests cover the rest)
    b, hq, hkv, sq, sk, d = shape
    torch.manual_seed(0)
    # [B, S, H, D] storage seen as [B, H, S, D], as attention layers produce it
    q = randn(b, sq, hq, d, dtype=dtype).transpose(1, 2)
    k = randn(b, sk, hkv, d, dtype=dtype).transpose(1, 2)
    v = randn(b, sk, hkv, d, dtype=dtype).transpose(1, 2)
    out, lse = sdpa_flash_forward(q, k, v, causal)
    assert_close(out, _ref_bhsd(q, k, v, causal).to(dtype), dtype=dtype, scale=_tol_scale(dtype))
    torch.testing.assert_close(lse.double(), _ref_lse(q, k, causal), atol=2e-3 if dtype != torch.float32 else 1e-5,
                               rtol=2e-3 if dtype != torch.float32 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 4, 2, 21, 21, 16), (2, 2, 2, 9, 9, 24)])
def test_descriptor_config(monkeypatch, dtype, causal, shape):
    # configs with DESC read through tensor descriptors (power-of-2 heads); others fall back
    from gemsops.ops import _attention
    _force_config(monkeypatch, dict(_attention._fwd_tuner.default, DESC=True))
    b, hq, hkv, sq, sk, d = shape
    q = randn(b, sq, hq, d, dtype=dtype).transpose(1, 2)
    k, v = randn(b, hkv, sk, d, dtype=dtype), randn(b, hkv, sk, d, dtype=dtype)
    out, lse = sdpa_flash_forward(q, k, v, causal)
    assert_close(out, _ref_bhsd(q, k, v, causal).to(dtype), dtype=dtype, scale=_tol_scale(dtype))
    torch.testing.assert_close(lse.double(), _ref_lse(q, k, causal), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("chunk", [2, 4, 3])
@pytest.mark.parametrize("causal", [True, False])
def test_head_chunk_order(monkeypatch, desc, chunk, causal):
    # HEAD_CHUNK reorders which program takes which (query block, head) of causal attention;
    # every pair must still be computed exactly once (3 does not divide 4 heads, and
    # non-causal attention ignores the option: the plain order serves both)
    _force_config(monkeypatch, dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2, DESC=desc, HEAD_CHUNK=chunk))
    torch.manual_seed(0)
    b, hq, hkv, s, d = 2, 4, 2, 37, 16
    q = randn(b, hq, s, d, dtype=torch.float16)
    k, v = randn(b, hkv, s, d, dtype=torch.float16), randn(b, hkv, s, d, dtype=torch.float16)
    out, lse = sdpa_flash_forward(q, k, v, causal)
    assert_close(out, _ref_bhsd(q, k, v, causal).half(), dtype=torch.float16, scale=_tol_scale(torch.float16))
    torch.testing.assert_close(lse.double(), _ref_lse(q, k, causal), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("desc", [False, True])
def test_plan_serves_new_tensors_of_one_layout(monkeypatch, desc):
    # the launch is planned once per call signature (the tuner is asked once); later calls
    # with other tensors of that layout, at other addresses, get their own results
    from gemsops.ops import _attention
    asked = []
    cfg = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2, DESC=desc)
    _force_config(monkeypatch, cfg)
    monkeypatch.setattr(_attention._fwd_tuner, "choose", lambda key, run: asked.append(key) or cfg)
    torch.manual_seed(0)
    for _ in range(3):
        q = randn(2, 21, 4, 16, dtype=torch.float16).transpose(1, 2)
        k, v = randn(2, 2, 21, 16, dtype=torch.float16), randn(2, 2, 21, 16, dtype=torch.float16)
        out, lse = sdpa_flash_forward(q, k, v, True)
        assert_close(out, _ref_bhsd(q, k, v, True).half(), dtype=torch.float16, scale=_tol_scale(torch.float16))
        torch.testing.assert_close(lse.double(), _ref_lse(q, k, True), atol=2e-3, rtol=2e-3)
    assert len(asked) == 1


def test_descriptor_plan_with_misaligned_base(monkeypatch):
    # a plan made for 16-byte aligned tensors, then called with q at an odd element offset
    # (same shape and strides): tensor descriptors cannot take that base, the pointer
    # kernel serves the call
    from gemsops.ops import _attention
    _force_config(monkeypatch, dict(_attention._fwd_tuner.default, DESC=True))
    torch.manual_seed(0)
    flat = randn(2 * 4 * 21 * 16 + 1, dtype=torch.float16)
    k, v = randn(2, 4, 21, 16, dtype=torch.float16), randn(2, 4, 21, 16, dtype=torch.float16)
    for offset in (0, 1):
        q = flat[offset:offset + 2 * 4 * 21 * 16].view(2, 4, 21, 16)
        assert (q.data_ptr() % 16 == 0) == (offset == 0)
        out, _ = sdpa_flash_forward(q, k, v, False)
        assert_close(out, _ref_bhsd(q, k, v, False).half(), dtype=torch.float16, scale=_tol_scale(torch.float16))


def test_kernel_scale():
    q, k, v = randn(1, 2, 6, 16), randn(1, 2, 9, 16), randn(1, 2, 9, 16)
    out, lse = sdpa_flash_forward(q, k, v, False, scale=0.05)
    assert_close(out, _ref_bhsd(q, k, v, False, scale=0.05).float(), scale=4.0)
    torch.testing.assert_close(lse.double(), _ref_lse(q, k, False, scale=0.05), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [-1.0, 0.0])
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_non_positive_scale(dtype, scale, causal):
    # 70 keys: whole (unmasked) key tiles and a masked tail at any tile size up to 64. Scores
    # span hundreds, so a running maximum taken on the wrong side (the unmasked tiles take
    # it before scaling, valid for positive scales only) overflows the exponentials.
    q = (randn(1, 2, 70, 16) * 30).to(dtype)
    k, v = randn(1, 2, 70, 16, dtype=dtype), randn(1, 2, 70, 16, dtype=dtype)
    out, lse = sdpa_flash_forward(q, k, v, causal, scale=scale)
    assert_close(out, _ref_bhsd(q, k, v, causal, scale=scale).to(dtype), dtype=dtype, scale=_tol_scale(dtype))
    torch.testing.assert_close(lse.double(), _ref_lse(q, k, causal, scale=scale), atol=2e-3, rtol=2e-3)


# The aten overload each SDPA backend calls on this device (the CUDA-only ones do not exist
# for the interpreter's CPU tensors; there the flash backend is the CPU twin).
if ON_GPU:
    BACKEND_OVERLOAD = {SDPBackend.FLASH_ATTENTION: "_scaled_dot_product_flash_attention",
                        SDPBackend.CUDNN_ATTENTION: "_scaled_dot_product_cudnn_attention",
                        SDPBackend.EFFICIENT_ATTENTION: "_scaled_dot_product_efficient_attention"}
else:
    BACKEND_OVERLOAD = {SDPBackend.FLASH_ATTENTION: "_scaled_dot_product_flash_attention_for_cpu"}


def _logged(path):
    return [op.removeprefix("aten::") for _, op, _ in read_log(path)] if Path(path).exists() else []


def _served():
    return set(families().get("sdpa", []))


# the composite op, served whole where no gradient is recorded (sdpa.scaled_dot_product_attention)
WHOLE = "scaled_dot_product_attention"
FUSED = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION)


def _sdpa_through_gems(q, k, v, **kwargs):
    """F.scaled_dot_product_attention under ``use_gems(include=["sdpa"])``, checking that gems'
    kernel ran exactly where torch's backend choice is a fused one that gems serves: in one
    call of the composite where no gradient is recorded, else through that backend's entry
    point inside torch's composite (which records the backward)."""
    chosen = SDPBackend(torch._fused_sdp_choice(q, k, v, **kwargs))
    overload = BACKEND_OVERLOAD.get(chosen)
    mask = kwargs.get("attn_mask")
    records_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, mask))
    log = Path(tempfile.mkdtemp()) / "log.txt"
    runs = []
    forward = sdpa_ops._forward
    sdpa_ops._forward = lambda *a, **kw: runs.append(1) or forward(*a, **kw)
    try:
        with gemsops.use_gems(include=["sdpa"], record=True, path=log):
            out = F.scaled_dot_product_attention(q, k, v, **kwargs)
    finally:
        sdpa_ops._forward = forward
    served = chosen in FUSED and overload in _served()
    through_entry = records_grad or chosen not in FUSED
    want_logged = {WHOLE} | ({overload} if through_entry and overload in _served() else set())
    assert set(_logged(log)) == want_logged, (chosen, _logged(log))
    assert runs == ([1] if served else []), (chosen, records_grad)
    return out


def _ref64(q, k, v, causal, scale=None, bias=None):
    """Attention in float64 (K/V heads repeated for GQA) and the natural-log log-sum-exp of
    the scaled scores, [B, H, Sq]; causal only for square attention. ``bias`` is added to the
    scores; a row it masks out entirely gives zeros (and a log-sum-exp of -inf)."""
    group = q.shape[1] // k.shape[1]
    q64 = q.detach().double()
    k64, v64 = (t.detach().double().repeat_interleave(group, 1) for t in (k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q64 @ k64.transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias.detach().double()
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
    top = s.amax(-1, keepdim=True)
    p = torch.exp(s - torch.where(torch.isinf(top), 0.0, top))
    total = p.sum(-1, keepdim=True)
    return (p @ v64) / torch.where(total == 0, 1.0, total), torch.logsumexp(s, -1)


def _check_grads(q, k, v, out, causal, gqa, dtype):
    grad = randn(*out.shape, dtype=dtype)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q64, k64, v64, is_causal=causal, enable_gqa=gqa)
    ref.backward(grad.double())
    tol_scale = 8.0 if dtype != torch.float32 else 4.0
    assert_close(out.detach(), ref.detach().to(dtype), dtype=dtype, scale=tol_scale)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert_close(got, want.to(dtype), dtype=dtype, scale=tol_scale * 2)


def _qkv(dtype, gqa, requires_grad, b=1, hq=4, s=6, d=16):
    hkv = 2 if gqa else hq
    torch.manual_seed(0)
    return tuple(randn(b, h, s, d, dtype=dtype).requires_grad_(requires_grad) for h in (hq, hkv, hkv))


def _forced_cases():
    # (backend, dtype, gqa): the dtypes each backend takes; torch's efficient kernel has no GQA.
    # Under the interpreter fp32 only: it is slow, and the kernel tests sweep the dtypes.
    if not ON_GPU:
        return [(SDPBackend.FLASH_ATTENTION, torch.float32, g) for g in (False, True)]
    half = (torch.float16, torch.bfloat16)
    return ([(SDPBackend.FLASH_ATTENTION, dt, g) for dt in half for g in (False, True)]
            + [(SDPBackend.CUDNN_ATTENTION, dt, g) for dt in half for g in (False, True)]
            + [(SDPBackend.EFFICIENT_ATTENTION, dt, False) for dt in (torch.float32, *half)])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend,dtype,gqa", _forced_cases())
def test_dispatch_forward_and_native_backward(backend, dtype, gqa, causal):
    # each SDPA backend, forced, reaches gems' forward through torch's dispatcher; torch's own
    # backward for that backend then runs on gems' output and log-sum-exp, so correct
    # gradients also check the log-sum-exp and its layout
    overload = BACKEND_OVERLOAD[backend]
    assert overload in _served()
    q, k, v = _qkv(dtype, gqa, True)
    log = Path(tempfile.mkdtemp()) / "log.txt"
    with gemsops.use_gems(include=["sdpa"], record=True, path=log), sdpa_kernel(backend):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    # the whole-call kernel sees the call first and leaves it to torch's composite (a gradient)
    assert set(_logged(log)) == {WHOLE, overload}, _logged(log)
    _check_grads(q, k, v, out, causal, gqa, dtype)


def _default_dtypes():
    return [torch.float16, torch.bfloat16, torch.float32] if ON_GPU else [torch.float32]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", _default_dtypes())
def test_dispatch_default_backend(dtype, causal, gqa, requires_grad):
    # whichever backend torch's own priority picks (cuDNN for fp16/bf16 on Hopper, efficient
    # for fp32, math where no fused kernel applies), gems serves it when it has that entry point
    q, k, v = _qkv(dtype, gqa, requires_grad)
    out = _sdpa_through_gems(q, k, v, is_causal=causal, enable_gqa=gqa)
    if requires_grad:
        _check_grads(q, k, v, out, causal, gqa, dtype)
    else:
        assert_close(out, _ref64(q, k, v, causal)[0].to(dtype), dtype=dtype, scale=8.0)


# Entry points called directly: (name, aten overload, dtypes, GQA). On the GPU through the
# dispatcher, compared element by element with torch's own kernel; under the interpreter
# (no CUDA kernels to dispatch to) the host functions on CPU tensors.
ENTRY_POINTS = [
    ("flash", "_scaled_dot_product_flash_attention", (torch.float16, torch.bfloat16), True),
    ("cudnn", "_scaled_dot_product_cudnn_attention", (torch.float16, torch.bfloat16), True),
    ("cudnn_lse", "_scaled_dot_product_cudnn_attention", (torch.float16, torch.bfloat16), True),
    ("efficient", "_scaled_dot_product_efficient_attention", (torch.float32, torch.float16, torch.bfloat16), False),
    ("efficient_lse", "_scaled_dot_product_efficient_attention", (torch.float32, torch.float16, torch.bfloat16), False),
]
_HOST = {"_scaled_dot_product_flash_attention": sdpa_ops.scaled_dot_product_flash_attention,
         "_scaled_dot_product_cudnn_attention": sdpa_ops.scaled_dot_product_cudnn_attention,
         "_scaled_dot_product_efficient_attention": sdpa_ops.scaled_dot_product_efficient_attention}


def _entry_args(name, q, k, v, causal, scale, bias=None):
    if name == "flash":
        return (q, k, v, 0.0, causal), dict(scale=scale)
    return (q, k, v, bias, name.endswith("_lse"), 0.0, causal), dict(scale=scale)


def _entry_lse(name, result, sq):
    """The [B, H, Sq] log-sum-exp inside each entry point's own layout (None when not asked)."""
    lse = result[1]
    if name == "flash":
        return lse
    if name == "cudnn_lse":
        return lse[..., 0]
    if name == "efficient_lse":
        return lse[:, :, :sq]
    return None


def _same_structure(got, want):
    """Every returned element as torch's kernel gives it: tensor or None, shape, dtype, device,
    and the output's strides (a view taken downstream must work on gems' output too)."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, torch.Tensor):
            assert isinstance(g, torch.Tensor), (i, g)
            assert (g.shape, g.dtype, g.device) == (w.shape, w.dtype, w.device), (i, g, w)
        else:
            assert g == w, (i, g, w)
    assert got[0].stride() == want[0].stride()


def _check_entry(name, overload, q, k, v, causal, dtype, scale=None, lse_tol=2e-3, bias=None):
    args, kwargs = _entry_args(name, q, k, v, causal, scale, bias)
    if ON_GPU:
        op = getattr(torch.ops.aten, overload).default
        log = Path(tempfile.mkdtemp()) / "log.txt"
        with gemsops.use_gems(include=["sdpa"], record=True, path=log):
            got = op(*args, **kwargs)
        assert set(_logged(log)) == {overload}
        want = op(*args, **kwargs)
        _same_structure(got, want)
    else:
        got = _HOST[overload].__wrapped__(*args, **kwargs)  # Unsupported here is a failure
        want = None
    ref_out, ref_lse = _ref64(q, k, v, causal, scale, bias)
    assert_close(got[0], ref_out.to(dtype), dtype=dtype, scale=4.0)
    lse = _entry_lse(name, got, q.shape[2])
    if lse is None:
        assert got[1] is None or got[1].numel() == 0
        return
    seen = torch.isfinite(ref_lse)  # rows a mask leaves keys to
    # a row masked out entirely: +inf, so that torch's backward (exp(score - lse)) reads zeros there
    assert bool((lse[~seen] == float("inf")).all())
    torch.testing.assert_close(lse.double()[seen], ref_lse[seen], atol=lse_tol, rtol=lse_tol)
    if name == "efficient_lse":
        # the rows past Sq are padding, +inf as in torch's kernel
        assert bool((got[1][:, :, q.shape[2]:] == float("inf")).all())
    if want is not None:
        torch.testing.assert_close(lse[seen], _entry_lse(name, want, q.shape[2])[seen], atol=lse_tol, rtol=lse_tol)


def _entry_cases(shapes):
    dtypes_here = (torch.float16, torch.bfloat16, torch.float32) if ON_GPU else (torch.float32, torch.float16)
    return [(name, overload, dt, s, c)
            for name, overload, dtypes, gqa in ENTRY_POINTS for dt in dtypes if dt in dtypes_here
            for s in shapes if gqa or s[1] == s[2]
            for c in (False, True) if not c or s[3] == s[4]]


# [B, S, H, D] storage seen as [B, H, S, D] (attention layers) and plain [B, H, S, D]
@pytest.mark.parametrize("bshd", [True, False])
@pytest.mark.parametrize("name,overload,dtype,shape,causal", _entry_cases([(2, 4, 2, 7, 7, 24), (1, 2, 2, 3, 9, 32)]))
def test_entry_point(name, overload, dtype, shape, causal, bshd):
    b, hq, hkv, sq, sk, d = shape
    torch.manual_seed(0)
    if bshd:
        q, k, v = (randn(b, s, h, d, dtype=dtype).transpose(1, 2) for s, h in ((sq, hq), (sk, hkv), (sk, hkv)))
    else:
        q, k, v = randn(b, hq, sq, d, dtype=dtype), randn(b, hkv, sk, d, dtype=dtype), randn(b, hkv, sk, d, dtype=dtype)
    _check_entry(name, overload, q, k, v, causal, dtype, lse_tol=2e-3 if dtype != torch.float32 else 1e-5)


def test_entry_point_scale():
    q, k, v = randn(1, 2, 6, 16), randn(1, 2, 9, 16), randn(1, 2, 9, 16)
    _check_entry("efficient_lse", "_scaled_dot_product_efficient_attention", q, k, v, False, torch.float32,
                 scale=0.05, lse_tol=1e-5)


def _masks(b, h, sq, sk, dtype):
    """Masks as models pass them, each with a row or a sequence start masked out entirely:
    name -> (attn_mask for F.scaled_dot_product_attention, the additive bias it means)."""
    torch.manual_seed(1)
    keep = torch.rand(b, 1, sq, sk, device=randn(1).device) > 0.3
    keep[:, :, 1] = False  # a query row that sees no key
    padding = torch.ones(b, 1, 1, sk, dtype=torch.bool, device=keep.device)
    padding[0, ..., : sk // 2] = False  # left padding of the first sequence
    float_mask = randn(sq, sk, dtype=dtype)  # a learned-bias-like 2-D float mask
    float_mask[0, : sk - 1] = float("-inf")
    per_head = randn(b, h, sk, sq, dtype=dtype).transpose(-1, -2)  # [B, H, Sq, Sk], key-major storage
    zero = torch.zeros((), dtype=torch.float64, device=keep.device)
    return {
        "bool": (keep, zero.masked_fill(~keep, float("-inf"))),
        "padding": (padding, zero.masked_fill(~padding, float("-inf"))),
        "float 2-D": (float_mask, float_mask),
        "float per head": (per_head, per_head),
    }


# (B, Hq, Hkv, Sq, Sk, D); the last one is a decode step's GQA group seen as query rows
MASK_SHAPES = [(2, 2, 2, 5, 5, 16), (2, 4, 2, 6, 70, 16), (1, 4, 4, 4, 37, 32)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", MASK_SHAPES)
@pytest.mark.parametrize("mask_kind", ["bool", "padding", "float 2-D", "float per head"])
def test_kernel_bias(dtype, shape, mask_kind):
    b, hq, hkv, sq, sk, d = shape
    torch.manual_seed(0)
    q = randn(b, sq, hq, d, dtype=dtype).transpose(1, 2)
    k, v = randn(b, hkv, sk, d, dtype=dtype), randn(b, hkv, sk, d, dtype=dtype)
    _, bias = _masks(b, hq, sq, sk, dtype)[mask_kind]
    bias = bias.to(dtype)
    out, lse = sdpa_flash_forward(q, k, v, bias=bias)
    want, want_lse = _ref64(q, k, v, False, bias=bias.expand(b, hq, sq, sk))
    assert_close(out, want.to(dtype), dtype=dtype, scale=_tol_scale(dtype))
    seen = torch.isfinite(want_lse)
    assert bool((lse[~seen] == float("inf")).all())
    torch.testing.assert_close(lse.double()[seen], want_lse[seen], atol=2e-3, rtol=2e-3)


def _mask_dispatch_dtypes():
    return [torch.float16, torch.bfloat16, torch.float32] if ON_GPU else [torch.float32]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", _mask_dispatch_dtypes())
@pytest.mark.parametrize("mask_kind", ["bool", "padding", "float 2-D", "float per head"])
def test_dispatch_mask(mask_kind, dtype, requires_grad):
    # F.scaled_dot_product_attention with an attn_mask reaches gems' forward: in one call
    # without a gradient, else through the backend torch picks, whose backward then runs on
    # gems' output and log-sum-exp, also over rows the mask leaves without keys (never NaN).
    # Through a backend, what such a row gives is the backend's: torch hands cuDNN a boolean
    # mask as a finite fill (the row then averages V), the others -inf (zeros), and gems
    # reads the bias it is given. Served whole, the boolean mask itself is read: zeros, as
    # SDPA documents for fully masked rows.
    b, hq, hkv, sq, sk, d = 2, 4, 4, 6, 11, 16
    torch.manual_seed(0)
    q, k, v = (randn(b, h, s, d, dtype=dtype).requires_grad_(requires_grad)
               for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
    mask, bias = _masks(b, hq, sq, sk, dtype)[mask_kind]
    out = _sdpa_through_gems(q, k, v, attn_mask=mask)
    bias64 = bias.double().expand(b, hq, sq, sk)
    want, want_lse = _ref64(q, k, v, False, bias=bias64)
    seen = torch.isfinite(want_lse)  # [B, H, Sq]: rows that see some key
    assert_close(out.detach()[seen], want[seen].to(dtype), dtype=dtype, scale=8.0)
    leaves = tuple(t.detach().clone().requires_grad_(requires_grad) for t in (q, k, v))
    native_out = F.scaled_dot_product_attention(*leaves, attn_mask=mask)
    if requires_grad:
        assert_close(out.detach(), native_out.detach(), dtype=dtype, scale=8.0)
    else:
        assert_close(out[seen], native_out[seen], dtype=dtype, scale=8.0)
        assert bool((out[~seen] == 0).all())
    if requires_grad:
        grad = randn(*out.shape, dtype=dtype)
        out.backward(grad)
        native_out.backward(grad)
        for got, ref in zip((q.grad, k.grad, v.grad), (t.grad for t in leaves)):
            assert not got.isnan().any()
            assert_close(got, ref, dtype=dtype, scale=16.0)
        if bool(seen.all()):
            q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
            s = q64 @ k64.transpose(-1, -2) / math.sqrt(d) + bias64
            (torch.softmax(s, -1) @ v64).backward(grad.double())
            for got, ref in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
                assert_close(got, ref.to(dtype), dtype=dtype, scale=16.0)


@pytest.mark.parametrize("dtype", _mask_dispatch_dtypes())
def test_dispatch_learned_bias_grad(dtype):
    # a float mask that is itself trained (relative-position or ALiBi-style biases): where torch
    # picks a fused backend for it (efficient on CUDA), gems serves the forward and torch's
    # backward derives the bias gradient from gems' output and log-sum-exp
    b, h, s, d = 2, 4, 9, 16
    torch.manual_seed(0)
    q, k, v = (randn(b, h, s, d, dtype=dtype).requires_grad_() for _ in range(3))
    bias = randn(b, h, s, s, dtype=dtype).requires_grad_()
    out = _sdpa_through_gems(q, k, v, attn_mask=bias)
    grad = randn(*out.shape, dtype=dtype)
    out.backward(grad)
    q64, k64, v64, bias64 = (t.detach().double().requires_grad_() for t in (q, k, v, bias))
    ref = torch.softmax(q64 @ k64.transpose(-1, -2) / math.sqrt(d) + bias64, -1) @ v64
    ref.backward(grad.double())
    assert_close(out.detach(), ref.detach().to(dtype), dtype=dtype, scale=8.0)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad), (bias.grad, bias64.grad)):
        assert_close(got, want.to(dtype), dtype=dtype, scale=16.0)


@pytest.mark.parametrize("backend", [SDPBackend.MATH, None])
def test_whole_call_follows_torchs_backend_choice(backend):
    # sdpa_kernel() and the backend switches still decide where no gradient is recorded: with
    # the math backend chosen, torch's composite runs (and gems' attention kernel does not)
    dtype = torch.bfloat16 if ON_GPU else torch.float32
    q, k, v = _qkv(dtype, True, False)
    keep = torch.rand(1, 1, 6, 6, device=q.device) > 0.2
    with sdpa_kernel(backend) if backend is not None else torch.no_grad():
        out = _sdpa_through_gems(q, k, v, attn_mask=keep, enable_gqa=True)
    bias = torch.zeros((), dtype=torch.float64, device=q.device).masked_fill(~keep, float("-inf"))
    want, lse = _ref64(q, k, v, False, bias=bias)
    seen = torch.isfinite(lse)
    assert_close(out[seen], want[seen].to(dtype), dtype=dtype, scale=4.0)


def test_whole_call_under_inference_mode():
    # inference tensors reach the backend key (the autograd key is skipped): served there too
    dtype = torch.bfloat16 if ON_GPU else torch.float32
    with torch.inference_mode():
        q, k, v = _qkv(dtype, True, False, s=9)
        out = _sdpa_through_gems(q, k, v, is_causal=True, enable_gqa=True)
        assert out.is_inference()
    assert_close(out, _ref64(q, k, v, True)[0].to(dtype), dtype=dtype, scale=4.0)


def test_fewer_kv_heads_without_enable_gqa_is_torchs_error():
    q, k, v = _qkv(torch.float32, True, False)  # 4 query heads, 2 K/V heads
    with pytest.raises(RuntimeError) as native_error:
        F.scaled_dot_product_attention(q, k, v)
    with torch.no_grad(), gemsops.use_gems(include=["sdpa"]), pytest.raises(RuntimeError) as gems_error:
        F.scaled_dot_product_attention(q, k, v)
    assert str(gems_error.value) == str(native_error.value)


def test_tracing_modes_see_torchs_decomposition():
    # fake tensors (torch.compile's tracing) and dispatch modes reach the whole-call kernel
    # first; they must get torch's composite, whose ops they can see
    from torch._subclasses.fake_tensor import FakeTensorMode

    q, k, v = _qkv(torch.float32, False, False)
    keep = torch.rand(1, 1, 6, 6, device=q.device) > 0.2
    with torch.no_grad(), gemsops.use_gems(include=["sdpa"]):
        with SeenOps() as seen:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        with FakeTensorMode() as mode:
            fake = F.scaled_dot_product_attention(*(mode.from_tensor(t) for t in (q, k, v, keep)))
    assert any("_scaled_dot_product_" in op for op in seen.ops), seen.ops  # the composite's entry point
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=keep))
    assert fake.shape == q.shape and fake.dtype == q.dtype


BIAS_ENTRY_POINTS = [entry for entry in ENTRY_POINTS if entry[0] != "flash"]  # flash's schema has no mask


def _entry_bias(bias, b, h, sq, sk):
    """``bias`` as torch's SDPA front end hands it to the CUDA entry points, whose own kernels
    need it: [B, H, Sq, Sk] with a contiguous last dimension padded to 16 elements. The
    interpreter's host functions take it as it is (any broadcast layout)."""
    if not ON_GPU:
        return bias
    full = torch.zeros(b, h, sq, -(-sk // 16) * 16, dtype=bias.dtype, device=bias.device)
    full[..., :sk] = bias
    return full[..., :sk]


@pytest.mark.parametrize("mask_kind", ["bool", "padding", "float per head"])
@pytest.mark.parametrize("name,overload,dtypes", [(n, o, dts) for n, o, dts, _ in BIAS_ENTRY_POINTS])
def test_entry_point_bias(name, overload, dtypes, mask_kind):
    # fp32 where the entry point takes it under the interpreter (fast there), else fp16
    dtype = torch.bfloat16 if ON_GPU else torch.float32 if torch.float32 in dtypes else torch.float16
    b, h, sq, sk, d = 2, 4, 5, 19, 16
    q, k, v = randn(b, h, sq, d, dtype=dtype), randn(b, h, sk, d, dtype=dtype), randn(b, h, sk, d, dtype=dtype)
    bias = _entry_bias(_masks(b, h, sq, sk, dtype)[mask_kind][1].to(dtype), b, h, sq, sk)
    _check_entry(name, overload, q, k, v, False, dtype, bias=bias,
                 lse_tol=2e-3 if dtype != torch.float32 else 1e-5)


@pytest.mark.parametrize("rows,masked,served", [(1, False, False), (1, True, False), (4, False, False),
                                               (4, True, True)])
def test_decode_steps_go_native_unless_masked_rows(monkeypatch, rows, masked, served):
    # a few query rows over a long context: torch's decode kernels split the keys, gems'
    # kernel would walk them in B x H programs, so torch's kernel runs; masked steps of 4
    # rows or more stay with gems (torch's masked path is the slower one there)
    dtype = torch.bfloat16 if ON_GPU else torch.float32
    q, k, v = randn(1, 4, rows, 16, dtype=dtype), randn(1, 4, 600, 16, dtype=dtype), randn(1, 4, 600, 16, dtype=dtype)
    keep = torch.ones(1, 1, 1, 600, dtype=torch.bool, device=q.device)
    keep[..., :7] = False
    mask = keep if masked else None
    runs = []
    forward = sdpa_ops._forward
    monkeypatch.setattr(sdpa_ops, "_forward", lambda *a, **kw: runs.append(1) or forward(*a, **kw))
    with gemsops.use_gems(include=["sdpa"]):
        got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert runs == ([1] if served else [])
    bias = torch.zeros((), dtype=torch.float64, device=q.device).masked_fill(~keep, float("-inf")) if masked else None
    assert_close(got, _ref64(q, k, v, False, bias=bias)[0].to(dtype), dtype=dtype, scale=4.0)


def test_dispatch_unsupported_goes_native():
    # float64 (not a kernel dtype) with a mask, and non-square causal attention (torch aligns
    # it top-left, the kernel bottom-right), are not the kernel's cases: torch's own answer
    dtype = torch.float16 if ON_GPU else torch.float32
    q, k, v = randn(1, 2, 4, 16, dtype=dtype), randn(1, 2, 7, 16, dtype=dtype), randn(1, 2, 7, 16, dtype=dtype)
    q64, k64, v64 = (t.double() for t in (q, k, v))
    mask = randn(4, 7, dtype=torch.float64)
    want_mask = F.scaled_dot_product_attention(q64, k64, v64, attn_mask=mask)
    want_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    log = Path(tempfile.mkdtemp()) / "log.txt"
    with gemsops.use_gems(include=["sdpa"], record=True, path=log):
        got_mask = F.scaled_dot_product_attention(q64, k64, v64, attn_mask=mask)
        got_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(got_mask, want_mask)
    torch.testing.assert_close(got_causal, want_causal)


def test_enable_all_keeps_working():
    # enabling every gems op must not break on a dispatch key without the CUDA-only overload
    gemsops.enable()
    q = randn(1, 2, 5, 16)
    out = F.scaled_dot_product_attention(q, q, q)
    gemsops.disable()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q), atol=1e-5, rtol=1e-5)


if ON_GPU:
    GPU_SHAPES = [(2, 8, 8, 1000, 1000, 128), (1, 32, 8, 513, 513, 64), (1, 4, 4, 257, 300, 80),
                  (2, 4, 1, 130, 130, 256), (4, 16, 16, 1, 1, 128), (1, 4, 4, 130, 130, 256)]

    @pytest.mark.parametrize("name,overload,dtype,shape,causal", _entry_cases(GPU_SHAPES))
    def test_aten_op_gpu(name, overload, dtype, shape, causal):
        b, hq, hkv, sq, sk, d = shape
        q = randn(b, hq, sq, d, dtype=dtype)
        k, v = randn(b, hkv, sk, d, dtype=dtype), randn(b, hkv, sk, d, dtype=dtype)
        _check_entry(name, overload, q, k, v, causal, dtype, lse_tol=2e-3 if dtype != torch.float32 else 1e-5)

    @pytest.mark.parametrize("mask_kind", ["bool", "padding", "float per head"])
    @pytest.mark.parametrize("shape", [(1, 8, 8, 4, 600, 64), (2, 8, 8, 300, 300, 128), (2, 4, 4, 129, 1000, 128)])
    @pytest.mark.parametrize("name,overload", [(n, o) for n, o, _, _ in BIAS_ENTRY_POINTS])
    def test_aten_op_bias_gpu(name, overload, shape, mask_kind):
        # the first shape is the Llama-style decode step of benchmark/e2e.py: a KV group's
        # query heads as rows over a static cache, with a [1, 1, 1, Sk] mask
        b, hq, hkv, sq, sk, d = shape
        q = randn(b, hq, sq, d, dtype=torch.bfloat16)
        k, v = randn(b, hkv, sk, d, dtype=torch.bfloat16), randn(b, hkv, sk, d, dtype=torch.bfloat16)
        bias = _entry_bias(_masks(b, hq, sq, sk, torch.bfloat16)[mask_kind][1].to(torch.bfloat16), b, hq, sq, sk)
        _check_entry(name, overload, q, k, v, False, torch.bfloat16, bias=bias)

    def test_sdpa_causal_model_size_gpu():
        q, k, v = (randn(1, 32, 2048, 128, dtype=torch.bfloat16) for _ in range(3))
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        log = Path(tempfile.mkdtemp()) / "log.txt"
        with gemsops.use_gems(include=["sdpa"], record=True, path=log):
            got = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert set(_logged(log)) & _served()
        # against torch's own fused kernel (itself bf16): a bf16-ulp-level difference
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
        assert math.isfinite(got.float().abs().max().item())


def test_outputs_are_fresh_tensors_in_torchs_layout():
    # the output follows query's dimension order ([B,S,H,D] storage stays so), also when
    # query is a strided view (a slice of a packed QKV projection), and the RNG placeholders
    # are new 0-d tensors at each call, never shared between results
    dev = gemsops.VENDOR.device_type
    packed = torch.randn(2, 7, 3 * 4 * 8, device=dev)
    for q in (packed[..., :32].view(2, 7, 4, 8).transpose(1, 2),  # strided: not dense
              torch.randn(2, 7, 4, 8, device=dev).transpose(1, 2),  # dense, [B,S,H,D] storage
              torch.randn(2, 4, 7, 8, device=dev)):
        for _ in range(2):  # the second call takes the remembered layout
            out = sdpa_ops._like_query(q)
            assert out.shape == q.shape and out.dtype == q.dtype
            heads_inner = q.stride(1) < q.stride(2)  # [B,S,H,D] storage
            assert out.stride() == ((7 * 4 * 8, 8, 4 * 8, 1) if heads_inner else (4 * 7 * 8, 7 * 8, 8, 1))
            assert out.untyped_storage().data_ptr() != q.untyped_storage().data_ptr()
    a, b = sdpa_ops._placeholder(torch.int64, packed), sdpa_ops._placeholder(torch.int64, packed)
    assert a.shape == () and a.dtype == torch.int64 and a.device == packed.device
    assert a.data_ptr() != b.data_ptr()

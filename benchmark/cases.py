"""The op cases: shapes from real models, inputs, and each implementation's call.

A :class:`Case` builds one input set lazily (``make(device)``), so listing the suite
allocates nothing. Every implementation of a case receives the same input dict:

- ``native``: the PyTorch call (for fused ops: the equivalent sequence of torch ops).
- gems: either the same PyTorch call routed through ``gemsops.use_gems`` (``gems_aten``
  names the op families/overloads a user would include) or a direct ``gemsops.ops``
  function (``gems_direct``), for the fused ops that have no aten equivalent.
- ``flaggems``: ``ENABLE`` (the PyTorch call under FlagGems' global ``enable()``) or a
  callable ``(flag_gems, inp)`` for its fused functions.
- ``liger``: a callable ``(liger, inp)`` where ``liger`` exposes Liger-Kernel's
  autograd Functions by name (see ``harness.liger_namespace``).

``bytes`` counts every input read once and every output written once; ``flops`` is set
for matmuls and attention. Shapes are those of Llama/Qwen models: hidden 2048-8192,
token counts 1 (decode) to 16384 (prefill), MLP/attention projection weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

ENABLE = "enable"  # FlagGems peer: the native call under flag_gems.enable()

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
DTYPE_NAMES = {BF16: "bf16", FP16: "fp16", FP32: "fp32"}

# category of every op, in report order
CATEGORIES = {
    "pointwise": ["add", "mul", "silu", "gelu", "exp"],
    "reduction": ["sum", "mean", "amax"],
    "softmax": ["softmax", "log_softmax"],
    "norm": ["rms_norm", "layer_norm", "rms_norm_train", "layer_norm_train", "group_norm", "group_norm_train"],
    "fused": ["fused_add_rms_norm", "silu_and_mul", "rotary_embedding"],
    "matmul": ["mm", "addmm", "linear", "bmm"],
    "indexing": ["embedding", "embedding_train", "index_select", "cat"],
    "loss": ["cross_entropy", "cross_entropy_train"],
    "attention": ["sdpa", "paged_attention", "flash_attn_varlen"],
}
OPS = [op for ops in CATEGORIES.values() for op in ops]
CATEGORY_OF = {op: cat for cat, ops in CATEGORIES.items() for op in ops}

# (tokens, hidden): decode, small batch, prefill, large prefill
ROWS_QUICK = [(1, 4096), (32, 4096), (4096, 4096), (16384, 8192)]
ROWS_FULL = [(1, 2048), (1, 4096), (1, 8192), (32, 4096), (128, 8192), (2048, 2048),
             (4096, 4096), (8192, 5120), (16384, 2048), (16384, 8192)]
# mm shapes: M token counts against Llama-3-8B projection weights (K x N), plus 8192^3
MM_M = [1, 16, 128, 4096]
MM_WEIGHTS = [(4096, 4096), (4096, 14336), (14336, 4096)]
MM_SQUARE = (8192, 8192, 8192)
# nn.Linear of a 1-2B model (Llama-3.2-1B: hidden 2048, intermediate 8192): decode and prefill
SMALL_MODEL_M = [1, 512]
SMALL_MODEL_WEIGHTS = [(2048, 2048), (2048, 8192), (8192, 2048)]


@dataclass
class Case:
    op: str
    shape: str  # label, e.g. "4096x4096"
    dtype: torch.dtype
    make: Callable[[str], dict]
    native: Callable[[dict], Any]
    bytes: int = 0
    flops: int = 0
    gems_aten: tuple = ()  # op names for use_gems(include=...)
    gems_direct: str | None = None  # gemsops.ops attribute for fused ops
    gems_call: Callable | None = None  # (fn, inp) -> out, with fn = gemsops.ops.<gems_direct>
    flaggems: Any = None  # ENABLE, a callable (flag_gems, inp), or None
    liger: Callable | None = None  # (liger namespace, inp) -> out
    tol: float | None = None  # relative tolerance of the output check (None: per dtype)
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def category(self) -> str:
        return CATEGORY_OF[self.op]

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype).removeprefix("torch."))

    @property
    def id(self) -> str:
        return f"{self.op}/{self.shape}/{self.dtype_name}"


def _esize(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _randn(shape, dtype, device, scale=1.0):
    return torch.randn(shape, dtype=torch.float32, device=device).mul_(scale).to(dtype)


def _label(*dims) -> str:
    return "x".join(str(d) for d in dims)


# ---------------------------------------------------------------- memory-bound ops

def _pointwise_cases(rows, dtype):
    out = []
    unary = {
        "silu": (F.silu, ENABLE),
        "gelu": (F.gelu, ENABLE),
        "exp": (torch.exp, ENABLE),
    }
    for t, h in rows:
        e = _esize(dtype)
        n = t * h

        def make2(device, t=t, h=h):
            return {"x": _randn((t, h), dtype, device), "y": _randn((t, h), dtype, device)}

        def make1(device, t=t, h=h):
            return {"x": _randn((t, h), dtype, device)}

        out.append(Case("add", _label(t, h), dtype, make2, lambda i: torch.add(i["x"], i["y"]),
                        bytes=3 * n * e, gems_aten=("add",), flaggems=ENABLE))
        out.append(Case("mul", _label(t, h), dtype, make2, lambda i: torch.mul(i["x"], i["y"]),
                        bytes=3 * n * e, gems_aten=("mul",), flaggems=ENABLE))
        for name, (fn, fg) in unary.items():
            out.append(Case(name, _label(t, h), dtype, make1, lambda i, fn=fn: fn(i["x"]),
                            bytes=2 * n * e, gems_aten=(name,), flaggems=fg))
    return out


def _reduction_cases(rows, dtype):
    out = []
    for t, h in rows:
        e = _esize(dtype)

        def make(device, t=t, h=h):
            return {"x": _randn((t, h), dtype, device)}

        b = (t * h + t) * e
        out.append(Case("sum", _label(t, h), dtype, make, lambda i: torch.sum(i["x"], dim=-1),
                        bytes=b, gems_aten=("sum",), flaggems=ENABLE))
        out.append(Case("mean", _label(t, h), dtype, make, lambda i: torch.mean(i["x"], dim=-1),
                        bytes=b, gems_aten=("mean",), flaggems=ENABLE))
        out.append(Case("amax", _label(t, h), dtype, make, lambda i: torch.amax(i["x"], dim=-1),
                        bytes=b, gems_aten=("amax",), flaggems=ENABLE, tol=0.0))
    return out


def _softmax_cases(rows, dtype):
    out = []
    # the sampling softmax over a Llama-3 vocabulary, for a decode batch
    for t, h in list(rows) + [(64, 128256)]:
        e = _esize(dtype)

        def make(device, t=t, h=h):
            return {"x": _randn((t, h), dtype, device, 4.0)}

        out.append(Case("softmax", _label(t, h), dtype, make, lambda i: torch.softmax(i["x"], dim=-1),
                        bytes=2 * t * h * e, gems_aten=("softmax", "_softmax"), flaggems=ENABLE))
        out.append(Case("log_softmax", _label(t, h), dtype, make,
                        lambda i: torch.log_softmax(i["x"], dim=-1),
                        bytes=2 * t * h * e, gems_aten=("log_softmax", "_log_softmax"), flaggems=ENABLE))
    return out


def _norm_cases(rows, dtype):
    out = []
    eps = 1e-6
    for t, h in rows:
        e = _esize(dtype)

        def make(device, t=t, h=h):
            return {"x": _randn((t, h), dtype, device), "w": _randn((h,), dtype, device),
                    "b": _randn((h,), dtype, device)}

        out.append(Case(
            "rms_norm", _label(t, h), dtype, make,
            lambda i: F.rms_norm(i["x"], (i["x"].shape[-1],), i["w"], eps),
            bytes=(2 * t * h + h) * e, gems_aten=("rms_norm", "_fused_rms_norm"), flaggems=ENABLE,
            liger=lambda L, i: L.LigerRMSNormFunction.apply(i["x"], i["w"], eps)))
        out.append(Case(
            "layer_norm", _label(t, h), dtype, make,
            lambda i: F.layer_norm(i["x"], (i["x"].shape[-1],), i["w"], i["b"], eps),
            bytes=(2 * t * h + 2 * h) * e, gems_aten=("layer_norm", "native_layer_norm"), flaggems=ENABLE,
            liger=lambda L, i: L.LigerLayerNormFunction.apply(i["x"], i["w"], i["b"], eps)))
    for t, h in [(t, h) for t, h in rows if t >= 2048]:  # training batches, not decode
        e = _esize(dtype)

        def make(device, t=t, h=h):
            return {"x": _randn((t, h), dtype, device), "w": _randn((h,), dtype, device),
                    "b": _randn((h,), dtype, device), "g": _randn((t, h), dtype, device)}

        # bytes: forward reads x and writes y, backward reads g and x and writes dx
        out.append(Case(
            "rms_norm_train", _label(t, h), dtype, make,
            lambda i: _train_step(lambda x, w: F.rms_norm(x, (x.shape[-1],), w, eps), i, "x", "w"),
            bytes=5 * t * h * e, gems_aten=("rms_norm", "_fused_rms_norm", "_fused_rms_norm_backward"),
            flaggems=ENABLE,
            liger=lambda L, i: _train_step(lambda x, w: L.LigerRMSNormFunction.apply(x, w, eps), i, "x", "w"),
            note="forward and backward, gradients of x and weight as outputs"))
        out.append(Case(
            "layer_norm_train", _label(t, h), dtype, make,
            lambda i: _train_step(lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, eps), i, "x", "w", "b"),
            bytes=5 * t * h * e, gems_aten=("layer_norm", "native_layer_norm", "native_layer_norm_backward"),
            flaggems=ENABLE,
            liger=lambda L, i: _train_step(lambda x, w, b: L.LigerLayerNormFunction.apply(x, w, b, eps),
                                           i, "x", "w", "b"),
            note="forward and backward, gradients of x, weight and bias as outputs"))
    return out


def _group_norm_cases(quick, dtype):
    # [N, C, H, W] activations of a Stable-Diffusion-style UNet (32 groups) at its widest and
    # deepest levels; the full suite adds a large-resolution VAE layer
    shapes = [(8, 320, 64, 64), (8, 1280, 16, 16)] + ([] if quick else [(8, 640, 32, 32), (2, 128, 256, 256)])
    out = []
    for n, c, h, w in shapes:
        e = _esize(dtype)

        def make(device, n=n, c=c, h=h, w=w):
            return {"x": _randn((n, c, h, w), dtype, device), "w": _randn((c,), dtype, device),
                    "b": _randn((c,), dtype, device), "g": _randn((n, c, h, w), dtype, device)}

        out.append(Case(
            "group_norm", _label(n, c, h, w) + " G32", dtype, make, lambda i: F.group_norm(i["x"], 32, i["w"], i["b"]),
            bytes=2 * n * c * h * w * e, gems_aten=("group_norm", "native_group_norm"), flaggems=ENABLE))
        out.append(Case(
            "group_norm_train", _label(n, c, h, w) + " G32", dtype, make,
            lambda i: _train_step(lambda x, w, b: F.group_norm(x, 32, w, b), i, "x", "w", "b"),
            bytes=5 * n * c * h * w * e,
            gems_aten=("group_norm", "native_group_norm", "native_group_norm_backward"), flaggems=ENABLE,
            note="forward and backward, gradients of x, weight and bias as outputs"))
    return out


def _train_step(fn, i, *names):
    """Gradients of ``fn(*inputs)`` against the cotangent ``i["g"]``, in ``names`` order."""
    with torch.enable_grad():  # the harness times under no_grad
        leaves = [i[n].detach().requires_grad_() for n in names]
        fn(*leaves).backward(i["g"])
    return tuple(t.grad for t in leaves)


# ---------------------------------------------------------------- fused LLM ops

def _fused_add_rms_norm_native(i, eps):
    r = i["x"] + i["r"]
    return F.rms_norm(r, (r.shape[-1],), i["w"], eps), r


def _fused_cases(rows, dtype, quick):
    out = []
    eps = 1e-6
    for t, h in rows:
        e = _esize(dtype)

        def make(device, t=t, h=h):
            return {"x": _randn((t, h), dtype, device), "r": _randn((t, h), dtype, device),
                    "w": _randn((h,), dtype, device)}

        def gems_farn(fn, i):
            # in place (vLLM semantics): x <- rms_norm(x + r) * w, r <- x + r
            fn(i["x"], i["r"], i["w"], eps)
            return i["x"], i["r"]

        def fg_farn(fg, i):
            fg.fused_add_rms_norm(i["x"], i["r"], [i["x"].shape[-1]], i["w"], eps)
            return i["x"], i["r"]

        out.append(Case(
            "fused_add_rms_norm", _label(t, h), dtype, make,
            lambda i: _fused_add_rms_norm_native(i, eps),
            bytes=(4 * t * h + h) * e, gems_direct="fused_add_rms_norm", gems_call=gems_farn,
            flaggems=fg_farn,
            liger=lambda L, i: L.LigerFusedAddRMSNormFunction.apply(i["x"], i["r"], i["w"], eps),
            note="native: x + r, then F.rms_norm"))

    inter_sizes = [(1, 14336), (32, 14336), (4096, 14336), (16384, 8192)] if quick else \
        [(1, 14336), (32, 14336), (128, 28672), (4096, 14336), (8192, 18944), (16384, 8192)]
    for t, d in inter_sizes:
        e = _esize(dtype)

        def make(device, t=t, d=d):
            x = _randn((t, 2 * d), dtype, device)
            # Liger takes the gate and up projections as two tensors (its MLP's layout)
            return {"x": x, "a": x[:, :d].contiguous(), "b": x[:, d:].contiguous()}

        def native(i, d=d):
            return F.silu(i["x"][..., :d]) * i["x"][..., d:]

        out.append(Case(
            "silu_and_mul", _label(t, 2 * d), dtype, make, native,
            bytes=3 * t * d * e, gems_direct="silu_and_mul", gems_call=lambda fn, i: fn(i["x"]),
            flaggems=lambda fg, i, d=d: fg.silu_and_mul(i["x"][..., :d], i["x"][..., d:]),
            liger=lambda L, i: L.LigerSiLUMulFunction.apply(i["a"], i["b"]),
            note="native: F.silu(x[..., :d]) * x[..., d:]"))

    hq, hk, hd = 32, 8, 128
    for t in ([1, 32, 4096, 16384] if quick else [1, 32, 256, 4096, 16384]):
        e = _esize(dtype)
        max_pos = max(8192, t)

        def make(device, t=t, max_pos=max_pos):
            pos = torch.randint(0, max_pos, (t,), device=device, dtype=torch.int64)
            inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
            freqs = torch.arange(max_pos, device=device, dtype=torch.float32)[:, None] * inv[None, :]
            cache = torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(dtype)  # [max_pos, hd]
            q = _randn((t, hq * hd), dtype, device)
            k = _randn((t, hk * hd), dtype, device)
            cos, sin = cache.index_select(0, pos).chunk(2, dim=-1)
            return {
                "pos": pos, "q": q, "k": k, "cache": cache,
                # FlagGems: the cos and sin halves of the cache
                "cos_h": cache[:, : hd // 2].contiguous(), "sin_h": cache[:, hd // 2:].contiguous(),
                # Liger (Hugging Face layout): q [1, H, T, D] views, cos/sin [1, T, D] per token
                "q4": q.clone().view(1, t, hq, hd).transpose(1, 2),
                "k4": k.clone().view(1, t, hk, hd).transpose(1, 2),
                "cos4": torch.cat([cos, cos], -1)[None].contiguous(),
                "sin4": torch.cat([sin, sin], -1)[None].contiguous(),
            }

        def gems_rope(fn, i):
            fn(i["pos"], i["q"], i["k"], hd, i["cache"], True)
            return i["q"], i["k"]

        def fg_rope(fg, i, t=t):
            return fg.apply_rotary_pos_emb(i["q"].view(t, hq, hd), i["k"].view(t, hk, hd),
                                           i["cos_h"], i["sin_h"], i["pos"], False)

        def liger_rope(L, i):
            q, k = L.LigerRopeFunction.apply(i["q4"], i["k4"], i["cos4"], i["sin4"])
            return q.transpose(1, 2), k.transpose(1, 2)

        out.append(Case(
            "rotary_embedding", f"{t}x{hq}/{hk}x{hd}", dtype, make, _rope_native,
            bytes=(2 * t * (hq + hk) * hd + t * hd) * e + 8 * t,
            gems_direct="rotary_embedding", gems_call=gems_rope, flaggems=fg_rope, liger=liger_rope,
            note="neox; native: gather cos/sin + rotate_half sequence; Liger gets cos/sin pre-gathered"))
    return out


def _rope_native(i):
    """vLLM's forward_native for neox rotary: gather cos/sin by position, rotate halves."""
    cos, sin = i["cache"].index_select(0, i["pos"]).chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    res = []
    for x in (i["q"], i["k"]):
        t = x.shape[0]
        x = x.view(t, -1, cos.shape[-1] * 2)
        x1, x2 = x.chunk(2, dim=-1)
        res.append(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).view(t, -1))
    return tuple(res)


# ---------------------------------------------------------------- matmul

def _mm_shapes(quick):
    shapes = [(m, k, n) for (k, n) in MM_WEIGHTS for m in MM_M]
    return shapes + [MM_SQUARE]


def _matmul_cases(quick):
    out = []
    for dtype in (BF16, FP16):
        for m, k, n in _mm_shapes(quick):
            e = _esize(dtype)

            def make(device, m=m, k=k, n=n):
                return {"a": _randn((m, k), dtype, device, 0.1), "b": _randn((k, n), dtype, device, 0.1)}

            out.append(Case("mm", _label(m, n, k), dtype, make, lambda i: torch.mm(i["a"], i["b"]),
                            bytes=(m * k + k * n + m * n) * e, flops=2 * m * n * k,
                            gems_aten=("mm",), flaggems=ENABLE, note="MxNxK"))
    linear_dtypes = (BF16,) if quick else (BF16, FP16)
    for dtype in linear_dtypes:
        small_model = [(m, k, n) for (k, n) in SMALL_MODEL_WEIGHTS for m in SMALL_MODEL_M]
        for m, k, n in _mm_shapes(quick) + small_model:
            e = _esize(dtype)

            def make(device, m=m, k=k, n=n):
                return {"x": _randn((m, k), dtype, device, 0.1), "w": _randn((n, k), dtype, device, 0.1),
                        "bias": _randn((n,), dtype, device)}

            base = (m * k + k * n + m * n) * e
            if (m, k, n) not in small_model:  # the small model's layers: without bias only
                out.append(Case("addmm", _label(m, n, k), dtype, make,
                                lambda i: F.linear(i["x"], i["w"], i["bias"]),
                                bytes=base + n * e, flops=2 * m * n * k,
                                gems_aten=("addmm", "linear"), flaggems=ENABLE, note="nn.Linear with bias"))
            out.append(Case("linear", _label(m, n, k), dtype, make, lambda i: F.linear(i["x"], i["w"]),
                            bytes=base, flops=2 * m * n * k, gems_aten=("mm", "linear", "matmul"),
                            flaggems=ENABLE, note="nn.Linear without bias (weight [N, K])"))
    # attention-score/value products of eager attention and a batched decode projection
    bmm_shapes = [(32, 2048, 2048, 128), (32, 2048, 128, 2048), (8, 16, 4096, 4096), (8, 4096, 4096, 4096)]
    for dtype in (BF16, FP16):
        for bsz, m, n, k in bmm_shapes:
            e = _esize(dtype)

            def make(device, bsz=bsz, m=m, n=n, k=k):
                return {"a": _randn((bsz, m, k), dtype, device, 0.1), "b": _randn((bsz, k, n), dtype, device, 0.1)}

            out.append(Case("bmm", _label(bsz, m, n, k), dtype, make, lambda i: torch.bmm(i["a"], i["b"]),
                            bytes=bsz * (m * k + k * n + m * n) * e, flops=2 * bsz * m * n * k,
                            gems_aten=("bmm",), flaggems=ENABLE, note="BxMxNxK"))
    return out


# ---------------------------------------------------------------- indexing, loss

def _indexing_cases(quick, dtype):
    out = []
    vocab, hidden = 128256, 4096
    for t in ([1, 32, 4096, 16384] if quick else [1, 32, 512, 4096, 16384]):
        e = _esize(dtype)

        def make(device, t=t):
            return {"w": _randn((vocab, hidden), dtype, device),
                    "idx": torch.randint(0, vocab, (t,), device=device)}

        out.append(Case("embedding", f"{t}x{vocab}x{hidden}", dtype, make, lambda i: F.embedding(i["idx"], i["w"]),
                        bytes=2 * t * hidden * e + 8 * t, gems_aten=("embedding",), flaggems=ENABLE))
    for t in ([4096, 16384] if quick else [512, 4096, 16384]):
        e = _esize(dtype)

        def make(device, t=t):
            return {"w": _randn((vocab, hidden), dtype, device), "idx": torch.randint(0, vocab, (t,), device=device),
                    "g": _randn((t, hidden), dtype, device)}

        out.append(Case("embedding_train", f"{t}x{vocab}x{hidden}", dtype, make,
                        lambda i: _train_step(lambda w: F.embedding(i["idx"], w), i, "w"),
                        bytes=(vocab + 2 * t) * hidden * e + 8 * t,
                        gems_aten=("embedding", "embedding_dense_backward"), flaggems=ENABLE,
                        note="lookup and the table's gradient (mostly zeros, written whole, as torch does)"))
    for rows, t, h in [(16384, 4096, 4096), (65536, 32, 8192)] + ([] if quick else [(32768, 16384, 2048)]):
        e = _esize(dtype)

        def make(device, rows=rows, t=t, h=h):
            return {"x": _randn((rows, h), dtype, device), "idx": torch.randint(0, rows, (t,), device=device)}

        out.append(Case("index_select", f"{t}of{rows}x{h}", dtype, make, lambda i: i["x"].index_select(0, i["idx"]),
                        bytes=2 * t * h * e + 8 * t, gems_aten=("index_select",), flaggems=ENABLE))
    # q/k/v concatenation along the hidden dim, and appending tokens along the sequence
    for shapes, dim in [(((4096, 4096), (4096, 1024), (4096, 1024)), -1), (((1, 4096), (1, 4096)), -1),
                        (((8192, 4096), (1024, 4096)), 0)]:
        e = _esize(dtype)
        total = sum(a * b for a, b in shapes)

        def make(device, shapes=shapes):
            return {"xs": [_randn(s, dtype, device) for s in shapes]}

        label = "+".join(_label(*s) for s in shapes) + f"@{dim}"
        out.append(Case("cat", label, dtype, make, lambda i, dim=dim: torch.cat(i["xs"], dim=dim),
                        bytes=2 * total * e, gems_aten=("cat",), flaggems=ENABLE))
    return out


def _first(ret):
    """The loss of a Liger cross-entropy call (newer versions also return a z-loss)."""
    return ret[0] if isinstance(ret, (tuple, list)) else ret


def _loss_cases(quick, dtype):
    out = []
    for t, v in [(1024, 32000), (4096, 32000), (4096, 128256)] + ([] if quick else [(16384, 128256)]):
        e = _esize(dtype)

        def make(device, t=t, v=v):
            return {"x": _randn((t, v), dtype, device, 2.0), "y": torch.randint(0, v, (t,), device=device)}

        out.append(Case(
            "cross_entropy", _label(t, v), dtype, make, lambda i: F.cross_entropy(i["x"], i["y"]),
            bytes=t * v * e + 8 * t, gems_aten=("cross_entropy", "log_softmax", "_log_softmax", "nll_loss",
                                                 "nll_loss_forward", "nll_loss_nd"),
            flaggems=ENABLE,
            liger=lambda L, i: _first(L.LigerCrossEntropyFunction.apply(i["x"], i["y"], None)),  # weight: None
            note="forward only; Liger's forward also writes the logits' gradient in place"))
        out.append(Case(
            "cross_entropy_train", _label(t, v), dtype, make, _cross_entropy_train,
            bytes=3 * t * v * e + 8 * t, gems_aten=("cross_entropy", "log_softmax", "_log_softmax",
                                                     "_log_softmax_backward_data", "nll_loss", "nll_loss_forward",
                                                     "nll_loss_backward", "nll_loss_nd"),
            flaggems=ENABLE, liger=_liger_cross_entropy_train,
            note="mean loss and its backward, the logits' gradient as output; bytes: logits read twice, "
                 "gradient written once"))
    return out


def _cross_entropy_train(i):
    # the harness times under no_grad; a training step needs autograd back on
    with torch.enable_grad():
        x = i["x"].detach().requires_grad_()
        F.cross_entropy(x, i["y"]).backward()
    return x.grad


def _liger_cross_entropy_train(L, i):
    with torch.enable_grad():
        x = i["x"].detach().requires_grad_()
        _first(L.LigerCrossEntropyFunction.apply(x, i["y"], None)).backward()
    return x.grad


# ---------------------------------------------------------------- attention

def _attention_cases(quick):
    out = []
    dtype = BF16
    e = _esize(dtype)
    sdpa = [(1, 32, 32, 4096, 128), (4, 32, 32, 2048, 128), (1, 32, 8, 8192, 128)]
    if not quick:
        sdpa += [(16, 32, 8, 1024, 128)]
    for b, hq, hk, s, d in sdpa:
        def make(device, b=b, hq=hq, hk=hk, s=s, d=d):
            return {"q": _randn((b, hq, s, d), dtype, device), "k": _randn((b, hk, s, d), dtype, device),
                    "v": _randn((b, hk, s, d), dtype, device)}

        gqa = hq != hk
        out.append(Case(
            "sdpa", f"B{b} H{hq}/{hk} S{s} D{d}", dtype, make,
            lambda i, gqa=gqa: F.scaled_dot_product_attention(i["q"], i["k"], i["v"], is_causal=True,
                                                              enable_gqa=gqa),
            bytes=(2 * b * hq * s * d + 2 * b * hk * s * d) * e, flops=2 * b * hq * s * s * d,  # causal: half of 4BHS^2D
            gems_aten=("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                       "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                       "_flash_attention_forward"),
            flaggems=ENABLE, note="causal prefill"))

    # batched prefill with padding, as Hugging Face models send it: one float mask [B, 1, S, S]
    # (causal, the first sequence left-padded by a quarter, its padded query rows unmasked)
    b, h, s, d = 4, 32, 1024, 128

    def make_masked(device, b=b, h=h, s=s, d=d):
        keep = torch.ones(s, s, dtype=torch.bool, device=device).tril()[None, None].repeat(b, 1, 1, 1)
        keep[0, :, :, : s // 4] = False
        keep[0, :, : s // 4] = True
        mask = torch.zeros(b, 1, s, s, dtype=dtype, device=device).masked_fill(~keep, float("-inf"))
        return {"q": _randn((b, h, s, d), dtype, device), "k": _randn((b, h, s, d), dtype, device),
                "v": _randn((b, h, s, d), dtype, device), "mask": mask}

    out.append(Case(
        "sdpa", f"B{b} H{h}/{h} S{s} D{d} mask", dtype, make_masked,
        lambda i: F.scaled_dot_product_attention(i["q"], i["k"], i["v"], attn_mask=i["mask"]),
        bytes=(4 * b * h * s * d + b * s * s) * e, flops=4 * b * h * s * s * d,  # every tile computed
        gems_aten=("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                   "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                   "_flash_attention_forward"),
        flaggems=ENABLE, note="padded batch, float mask"))

    # paged decode: KV gathered contiguous for torch SDPA, paged flash layout for gems
    hq, hk, d, block = 32, 8, 128, 16
    paged = [(64, 4096), (8, 16384), (1, 32768)]
    for b, ctx in paged:
        kv_bytes = 2 * b * ctx * hk * d * e

        def make(device, b=b, ctx=ctx):
            k = _randn((b, hk, ctx, d), dtype, device)
            v = _randn((b, hk, ctx, d), dtype, device)
            q = _randn((b, hq, 1, d), dtype, device)
            nblk = ctx // block
            perm = torch.randperm(b * nblk, device=device)
            table = perm.view(b, nblk).to(torch.int32)
            # cache[blk, slot, head, dim] holds token (blk's position in the table) * block + slot
            kc = torch.empty((b * nblk, block, hk, d), dtype=dtype, device=device)
            vc = torch.empty_like(kc)
            kc[perm] = k.view(b, hk, nblk, block, d).permute(0, 2, 3, 1, 4).reshape(b * nblk, block, hk, d)
            vc[perm] = v.view(b, hk, nblk, block, d).permute(0, 2, 3, 1, 4).reshape(b * nblk, block, hk, d)
            return {"q": q, "k": k, "v": v, "q3": q.view(b, hq, d), "kc": kc, "vc": vc, "table": table,
                    "lens": torch.full((b,), ctx, dtype=torch.int32, device=device)}

        def gems_paged(fn, i):
            return fn(i["q3"], i["kc"], i["vc"], i["table"], i["lens"], scale=1.0 / math.sqrt(d))

        out.append(Case(
            "paged_attention", f"B{b} L{ctx} H{hq}/{hk} D{d}", dtype, make,
            lambda i: F.scaled_dot_product_attention(i["q"], i["k"], i["v"], enable_gqa=True).view(i["q3"].shape),
            bytes=kv_bytes, flops=4 * b * hq * ctx * d,
            gems_direct="paged_attention", gems_call=gems_paged,
            note="native: SDPA enable_gqa on contiguous KV; bytes = KV read"))

    # varlen prefill: equal-length sequences so SDPA on the padded batch is the same work
    for nseq, s in [(4, 2048), (16, 512)]:
        total = nseq * s

        def make(device, nseq=nseq, s=s):
            q = _randn((nseq, hq, s, d), dtype, device)
            k = _randn((nseq, hk, s, d), dtype, device)
            v = _randn((nseq, hk, s, d), dtype, device)
            cu = torch.arange(0, (nseq + 1) * s, s, dtype=torch.int32, device=device)
            return {"q": q, "k": k, "v": v, "cu": cu, "s": s,
                    "qv": q.transpose(1, 2).reshape(nseq * s, hq, d),
                    "kv": k.transpose(1, 2).reshape(nseq * s, hk, d),
                    "vv": v.transpose(1, 2).reshape(nseq * s, hk, d)}

        def gems_varlen(fn, i):
            o = fn(i["qv"], i["kv"], i["vv"], i["cu"], i["s"], i["cu"], i["s"], causal=True)
            return o.view(-1, i["s"], hq, d).transpose(1, 2)

        out.append(Case(
            "flash_attn_varlen", f"{nseq}x{s} H{hq}/{hk} D{d}", dtype, make,
            lambda i: F.scaled_dot_product_attention(i["q"], i["k"], i["v"], is_causal=True, enable_gqa=True),
            bytes=(2 * total * hq * d + 2 * total * hk * d) * e, flops=2 * nseq * hq * s * s * d,
            gems_direct="flash_attn_varlen_func", gems_call=gems_varlen,
            note="causal; native: SDPA on the same sequences as a dense batch"))
    return out


def all_cases(quick: bool = False) -> list[Case]:
    """Every case of the suite, in report order (nothing is allocated)."""
    rows = ROWS_QUICK if quick else ROWS_FULL
    dtypes = (BF16,) if quick else (BF16, FP16, FP32)
    cases: list[Case] = []
    for dtype in dtypes:
        cases += _pointwise_cases(rows, dtype)
        cases += _reduction_cases(rows, dtype)
        cases += _softmax_cases(rows, dtype)
        cases += _norm_cases(rows, dtype)
    cases += _group_norm_cases(quick, BF16)
    cases += _fused_cases(rows, BF16, quick)
    cases += _matmul_cases(quick)
    cases += _indexing_cases(quick, BF16)
    cases += _loss_cases(quick, BF16)
    cases += _attention_cases(quick)
    order = {op: n for n, op in enumerate(OPS)}
    return sorted(cases, key=lambda c: order[c.op])  # stable: shape order kept within an op


def select(cases: list[Case], ops: str | list[str]) -> list[Case]:
    """Cases of the named ops or categories ("all" keeps everything); unknown names raise."""
    if isinstance(ops, str):
        ops = [o.strip() for o in ops.split(",") if o.strip()]
    if not ops or "all" in ops:
        return list(cases)
    wanted = set()
    for name in ops:
        if name in CATEGORIES:
            wanted.update(CATEGORIES[name])
        elif name in CATEGORY_OF:
            wanted.add(name)
        else:
            raise ValueError(f"unknown op or category {name!r}; known: {', '.join(list(CATEGORIES) + OPS)}")
    return [c for c in cases if c.op in wanted]

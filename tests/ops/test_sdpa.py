"""The SDPA flash forward: the kernel directly, and F.scaled_dot_product_attention through dispatch."""
import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gemsops
from gemsops.ops import sdpa_flash_forward
from gemsops.runtime.oplog import read_log
from gemsops.runtime.registry import families
from tests.ops.attention_ref import ref_attention, ref_lse
from tests.util import ON_GPU, assert_close, randn

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
    cfg = dict(_attention._fwd_tuner.default, DESC=True)
    monkeypatch.setattr(_attention._fwd_tuner, "choose", lambda key, run: cfg)
    b, hq, hkv, sq, sk, d = shape
    q = randn(b, sq, hq, d, dtype=dtype).transpose(1, 2)
    k, v = randn(b, hkv, sk, d, dtype=dtype), randn(b, hkv, sk, d, dtype=dtype)
    out, lse = sdpa_flash_forward(q, k, v, causal)
    assert_close(out, _ref_bhsd(q, k, v, causal).to(dtype), dtype=dtype, scale=_tol_scale(dtype))
    torch.testing.assert_close(lse.double(), _ref_lse(q, k, causal), atol=2e-3, rtol=2e-3)


def test_kernel_scale():
    q, k, v = randn(1, 2, 6, 16), randn(1, 2, 9, 16), randn(1, 2, 9, 16)
    out, lse = sdpa_flash_forward(q, k, v, False, scale=0.05)
    assert_close(out, _ref_bhsd(q, k, v, False, scale=0.05).float(), scale=4.0)
    torch.testing.assert_close(lse.double(), _ref_lse(q, k, False, scale=0.05), atol=1e-5, rtol=1e-5)


def _logged(path):
    return [op.removeprefix("aten::") for _, op, _ in read_log(path)] if Path(path).exists() else []


def _served_dtypes():
    return [torch.float16, torch.bfloat16] if ON_GPU else DTYPES


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("gqa", [False, True])
def test_dispatch_forward_and_native_backward(causal, gqa):
    # F.sdpa reaches gems through torch's dispatcher; torch's own flash backward then runs on
    # gems' output and log-sum-exp, so correct gradients also check the log-sum-exp
    served = families().get("sdpa", [])
    if not served:
        pytest.skip("no SDPA flash overload exists for this vendor's dispatch key")
    dtype = _served_dtypes()[0]
    b, hq, s, d = 1, 4, 6, 16
    hkv = 2 if gqa else hq
    torch.manual_seed(0)
    q = randn(b, hq, s, d, dtype=dtype).requires_grad_()
    k = randn(b, hkv, s, d, dtype=dtype).requires_grad_()
    v = randn(b, hkv, s, d, dtype=dtype).requires_grad_()
    log = Path(tempfile.mkdtemp()) / "log.txt"
    with gemsops.use_gems(include=["sdpa"], record=True, path=log):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    assert set(_logged(log)) & set(served), _logged(log)
    grad = randn(*out.shape, dtype=dtype)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q64, k64, v64, is_causal=causal, enable_gqa=gqa)
    ref.backward(grad.double())
    tol_scale = 8.0 if dtype != torch.float32 else 4.0
    assert_close(out.detach(), ref.detach().to(dtype), dtype=dtype, scale=tol_scale)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert_close(got, want.to(dtype), dtype=dtype, scale=tol_scale * 2)


def test_dispatch_unsupported_goes_native():
    # a float mask and non-square causal attention are not the kernel's cases: torch's own answer
    dtype = _served_dtypes()[0]
    q, k, v = randn(1, 2, 4, 16, dtype=dtype), randn(1, 2, 7, 16, dtype=dtype), randn(1, 2, 7, 16, dtype=dtype)
    mask = randn(4, 7, dtype=dtype)
    want_mask = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    want_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with gemsops.use_gems(include=["sdpa"]):
        got_mask = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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
                  (2, 4, 1, 130, 130, 256), (4, 16, 16, 1, 1, 128)]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("shape,causal",
                             [(s, c) for s in GPU_SHAPES for c in (False, True) if not c or s[3] == s[4]])
    def test_aten_op_gpu(dtype, causal, shape):
        b, hq, hkv, sq, sk, d = shape
        q = randn(b, hq, sq, d, dtype=dtype)
        k, v = randn(b, hkv, sk, d, dtype=dtype), randn(b, hkv, sk, d, dtype=dtype)
        op = torch.ops.aten._scaled_dot_product_flash_attention.default
        with gemsops.use_gems(include=["sdpa"]):
            got = op(q, k, v, 0.0, causal)
        assert got[4] == sq and got[5] == sk
        assert got[0].shape == (b, hq, sq, d) and got[1].shape == (b, hq, sq)
        ref = _ref_bhsd(q, k, v, causal)
        assert_close(got[0], ref.to(dtype), dtype=dtype, scale=4.0)
        torch.testing.assert_close(got[1].double(), _ref_lse(q, k, causal), atol=2e-3, rtol=2e-3)

    def test_sdpa_causal_model_size_gpu():
        q, k, v = (randn(1, 32, 2048, 128, dtype=torch.bfloat16) for _ in range(3))
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        with gemsops.use_gems(include=["sdpa"]):
            got = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # against torch's own flash kernel (itself bf16): a bf16-ulp-level difference
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
        assert math.isfinite(got.float().abs().max().item())

"""rotary_embedding (vLLM, in place) and apply_rotary_pos_emb (HF, with backward) vs plain torch."""
import pytest
import torch

import gemsops
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn


def _cache(max_pos, rot, dtype):
    inv = 1.0 / (10000 ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat((f.cos(), f.sin()), dim=-1).to(dtype).to(DEVICE)


def _ref_rotary(positions, x, head_size, cache, neox):
    """float64 rotation of a [T, H*D] or [T, H, D] tensor."""
    t = positions.numel()
    v = x.double().reshape(t, -1, head_size).clone()
    rot = cache.shape[-1]
    cs = cache.double()[positions.long()]
    c, s = cs[:, None, : rot // 2], cs[:, None, rot // 2:]
    r = v[..., :rot]
    if neox:
        x1, x2 = r[..., : rot // 2], r[..., rot // 2:]
        v[..., :rot] = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1)
    else:
        x1, x2 = r[..., 0::2], r[..., 1::2]
        v[..., :rot] = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), -1).flatten(-2)
    return v.reshape(x.shape)


CASES = [(5, 4, 2, 16, 16), (3, 2, 1, 32, 24), (4, 3, 3, 20, 8)]  # tokens, Hq, Hk, head_size, rot_dim
if ON_GPU:
    CASES += [(512, 32, 8, 128, 128), (77, 16, 16, 64, 32), (1000, 40, 8, 256, 64), (1, 32, 1, 128, 128)]


@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_vllm_rotary_in_place(case, dtype, neox):
    t, hq, hk, d, rot = case
    cache = _cache(64, rot, dtype)
    positions = torch.randint(0, 64, (t,), device=DEVICE)
    qkv = randn(t, (hq + 2 * hk) * d, dtype=dtype)
    q, k = qkv[:, : hq * d], qkv[:, hq * d: (hq + hk) * d]  # slices of a fused qkv buffer
    q_ref, k_ref = _ref_rotary(positions, q, d, cache, neox), _ref_rotary(positions, k, d, cache, neox)
    v_before = qkv[:, (hq + hk) * d:].clone()
    out = gemsops.ops.rotary_embedding(positions, q, k, d, cache, neox)
    assert out[0] is q and out[1] is k
    assert_close(q, q_ref.to(dtype), dtype, scale=2)
    assert_close(k, k_ref.to(dtype), dtype, scale=2)
    assert torch.equal(qkv[:, (hq + hk) * d:], v_before)  # v untouched


def test_vllm_rotary_3d_key_none_and_fallback():
    cache = _cache(16, 8, torch.float32)
    positions = torch.tensor([3, 0, 15], device=DEVICE)
    q = randn(3, 2, 8)
    ref = _ref_rotary(positions, q, 8, cache, True).float()
    gemsops.ops.rotary_embedding(positions, q, None, 8, cache, True)
    assert_close(q, ref)
    q16 = randn(3, 16, dtype=torch.bfloat16)  # fp32 cache with bf16 query
    ref = _ref_rotary(positions, q16, 8, cache, False)
    gemsops.ops.rotary_embedding(positions, q16, None, 8, cache, False)
    assert_close(q16, ref.bfloat16())
    q64, k64 = randn(3, 16, dtype=torch.float64), randn(3, 8, dtype=torch.float64)  # fp64: torch composite
    c64 = _cache(16, 8, torch.float64)
    rq, rk = _ref_rotary(positions, q64, 8, c64, True), _ref_rotary(positions, k64, 8, c64, True)
    gemsops.ops.rotary_embedding(positions, q64, k64, 8, c64, True)
    assert_close(q64, rq)
    assert_close(k64, rk)
    e = randn(0, 16)
    gemsops.ops.rotary_embedding(positions[:0], e, None, 8, cache, True)
    qt = randn(16, 3).t()  # not viewable as [T, H, D]: rotated through a copy, written back
    ref = _ref_rotary(positions, qt, 8, cache, True).float()
    gemsops.ops.rotary_embedding(positions, qt, None, 8, cache, True)
    assert_close(qt, ref)


def _hf_ref(q, k, cos, sin, unsqueeze_dim):
    def rot(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), -1)
    c, s = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * c + rot(q) * s, k * c + rot(k) * s


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
def test_hf_apply_rotary_forward_backward(dtype, unsqueeze_dim):
    b, hq, hk, s, d = 2, 4, 2, 5, 16
    if unsqueeze_dim == 1:  # [B, H, S, D] as views of [B, S, H, D] projections
        q = randn(b, s, hq, d, dtype=dtype).transpose(1, 2).requires_grad_()
        k = randn(b, s, hk, d, dtype=dtype).transpose(1, 2).requires_grad_()
    else:
        q = randn(b, s, hq, d, dtype=dtype).requires_grad_()
        k = randn(b, s, hk, d, dtype=dtype).requires_grad_()
    emb = torch.cat([randn(b, s, d // 2)] * 2, -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    qe, ke = gemsops.ops.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim)
    gq, gk = randn(*qe.shape, dtype=dtype), randn(*ke.shape, dtype=dtype)
    dq, dk = torch.autograd.grad((qe, ke), (q, k), (gq, gk))
    qd, kd = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    rq, rk = _hf_ref(qd, kd, cos.double(), sin.double(), unsqueeze_dim)
    rdq, rdk = torch.autograd.grad((rq, rk), (qd, kd), (gq.double(), gk.double()))
    assert qe.dtype == dtype and qe.shape == q.shape
    assert_close(qe, rq.to(dtype), dtype, scale=2)
    assert_close(ke, rk.to(dtype), dtype, scale=2)
    assert_close(dq, rdq.to(dtype), dtype, scale=2)
    assert_close(dk, rdk.to(dtype), dtype, scale=2)


def test_hf_general_cos_sin_and_fallbacks():
    # cos/sin halves that differ (not duplicated) exercise the exact transposed rotation
    q, k = randn(1, 2, 3, 8).requires_grad_(), randn(1, 1, 3, 8).requires_grad_()
    cos, sin = randn(1, 3, 8), randn(1, 3, 8)
    qe, ke = gemsops.ops.apply_rotary_pos_emb(q, k, cos, sin)
    dq, dk = torch.autograd.grad((qe.sum() + (ke * ke).sum()), (q, k))
    rq, rk = _hf_ref(q, k, cos, sin, 1)
    rdq, rdk = torch.autograd.grad((rq.sum() + (rk * rk).sum()), (q, k))
    assert_close(qe, rq)
    assert_close(ke, rk)
    assert_close(dq, rdq)
    assert_close(dk, rdk)
    cos.requires_grad_()  # gradient for cos: plain torch path
    qe, _ = gemsops.ops.apply_rotary_pos_emb(q, k, cos, sin)
    (dc,) = torch.autograd.grad(qe.sum(), cos)
    (rdc,) = torch.autograd.grad(_hf_ref(q, k, cos, sin, 1)[0].sum(), cos)
    assert_close(dc, rdc)
    q64 = randn(1, 2, 3, 8, dtype=torch.float64)
    assert_close(gemsops.ops.apply_rotary_pos_emb(q64, q64, cos.detach().double(), sin.double())[0],
                 _hf_ref(q64, q64, cos.detach().double(), sin.double(), 1)[0])

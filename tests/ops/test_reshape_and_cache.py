"""KV-cache writers against an explicit per-token reference (both layouts, any strides)."""
import pytest
import torch

from gemsops.ops import reshape_and_cache, reshape_and_cache_flash
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn


def _slots(num_tokens, num_blocks, block_size, pad=(), dtype=torch.int64, seed=0):
    g = torch.Generator().manual_seed(seed)
    slots = torch.randperm(num_blocks * block_size, generator=g)[:num_tokens]
    for i in pad:
        slots[i] = -1
    return slots.to(dtype=dtype, device=DEVICE)


def _expected_flash(key_cache, key, slots):
    exp = key_cache.clone()
    bs = key_cache.shape[1]
    for t, s in enumerate(slots.tolist()):
        if s >= 0:
            exp[s // bs, s % bs] = key[t]
    return exp


SHAPES = [(5, 2, 16, 4, 8), (7, 3, 24, 16, 3)] + ([(300, 8, 128, 16, 64), (33, 4, 80, 32, 8)] if ON_GPU else [])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hnd", [False, True])
def test_flash_layout(dtype, shape, hnd):
    t, h, d, bs, nb = shape
    key, value = randn(t, h, d, dtype=dtype), randn(t, h, d, dtype=dtype)
    if hnd:  # HND storage seen through an NHD view
        kc = randn(nb, h, bs, d, dtype=dtype).permute(0, 2, 1, 3)
        vc = randn(nb, h, bs, d, dtype=dtype).permute(0, 2, 1, 3)
    else:
        kc, vc = randn(nb, bs, h, d, dtype=dtype), randn(nb, bs, h, d, dtype=dtype)
    slots = _slots(t, nb, bs, pad=(1,))
    ek, ev = _expected_flash(kc, key, slots), _expected_flash(vc, value, slots)
    reshape_and_cache_flash(key, value, kc, vc, slots, "auto")
    torch.testing.assert_close(kc, ek, atol=0, rtol=0)
    torch.testing.assert_close(vc, ev, atol=0, rtol=0)


def _vllm_caches(nb, h, d, bs, dtype):
    x = 16 // torch.empty((), dtype=dtype).element_size()
    return randn(nb, h, d // x, bs, x, dtype=dtype), randn(nb, h, d, bs, dtype=dtype), x


def _x(dtype):
    return 16 // torch.empty((), dtype=dtype).element_size()


# the vLLM layout packs K in groups of x = 16 bytes: the head size must be a multiple of x
@pytest.mark.parametrize("dtype,shape", [(dt, s) for dt in FLOAT_DTYPES for s in SHAPES if s[2] % _x(dt) == 0])
def test_vllm_layout(dtype, shape):
    t, h, d, bs, nb = shape
    # key/value as strided slices of one fused qkv projection, as models produce them
    qkv = randn(t, 3, h, d, dtype=dtype)
    key, value = qkv[:, 1], qkv[:, 2]
    kc, vc, x = _vllm_caches(nb, h, d, bs, dtype)
    slots = _slots(t, nb, bs, pad=(0, t - 1), dtype=torch.int32)
    ek, ev = kc.clone(), vc.clone()
    for i, s in enumerate(slots.tolist()):
        if s >= 0:
            ek[s // bs, :, :, s % bs, :] = key[i].reshape(h, d // x, x)
            ev[s // bs, :, :, s % bs] = value[i]
    reshape_and_cache(key, value, kc, vc, slots, "auto", None, None)
    torch.testing.assert_close(kc, ek, atol=0, rtol=0)
    torch.testing.assert_close(vc, ev, atol=0, rtol=0)


def test_padded_tokens_and_flat_heads():
    # key/value padded past the slot mapping (CUDA-graph batches), given as [T, H*D]
    t, h, d, bs, nb = 6, 2, 16, 4, 4
    key, value = randn(t + 3, h * d), randn(t + 3, h * d)
    kc, vc = torch.zeros(nb, bs, h, d, device=DEVICE), torch.zeros(nb, bs, h, d, device=DEVICE)
    slots = _slots(t, nb, bs)
    reshape_and_cache_flash(key, value, kc, vc, slots)
    torch.testing.assert_close(kc, _expected_flash(torch.zeros_like(kc), key[:t].view(t, h, d), slots))
    torch.testing.assert_close(vc, _expected_flash(torch.zeros_like(vc), value[:t].view(t, h, d), slots))


def test_strided_slot_mapping():
    t, h, d, bs, nb = 4, 2, 16, 4, 2
    key, value = randn(t, h, d), randn(t, h, d)
    kc, vc = torch.zeros(nb, bs, h, d, device=DEVICE), torch.zeros(nb, bs, h, d, device=DEVICE)
    slots = _slots(t, nb, bs, pad=(2,))
    strided = torch.stack([slots, slots], 1)[:, 0]
    assert strided.stride(0) != 1
    reshape_and_cache_flash(key, value, kc, vc, strided)
    torch.testing.assert_close(kc, _expected_flash(torch.zeros_like(kc), key, slots), atol=0, rtol=0)
    torch.testing.assert_close(vc, _expected_flash(torch.zeros_like(vc), value, slots), atol=0, rtol=0)


def test_all_padding_and_empty():
    kc, vc = randn(2, 4, 2, 16), randn(2, 4, 2, 16)
    before = kc.clone(), vc.clone()
    key = randn(3, 2, 16)
    reshape_and_cache_flash(key, key, kc, vc, torch.full((3,), -1, dtype=torch.int64, device=DEVICE))
    reshape_and_cache_flash(key[:0], key[:0], kc, vc, torch.empty(0, dtype=torch.int64, device=DEVICE))
    torch.testing.assert_close(kc, before[0], atol=0, rtol=0)
    torch.testing.assert_close(vc, before[1], atol=0, rtol=0)


def test_dtype_mismatch_goes_to_torch_path():
    # fp32 activations into an fp16 cache: not the kernel's case, still a correct (cast) write
    t, h, d, bs, nb = 4, 2, 16, 4, 2
    key, value = randn(t, h, d), randn(t, h, d)
    kc = torch.zeros(nb, bs, h, d, dtype=torch.float16, device=DEVICE)
    vc = torch.zeros_like(kc)
    slots = _slots(t, nb, bs)
    reshape_and_cache_flash(key, value, kc, vc, slots)
    torch.testing.assert_close(kc, _expected_flash(torch.zeros_like(kc), key.half(), slots))


def test_fp8_cache_dtype_not_implemented():
    kc = torch.zeros(2, 4, 2, 16, device=DEVICE)
    key = randn(1, 2, 16)
    with pytest.raises(NotImplementedError, match="fp8"):
        reshape_and_cache_flash(key, key, kc, kc.clone(), torch.zeros(1, dtype=torch.int64, device=DEVICE), "fp8")

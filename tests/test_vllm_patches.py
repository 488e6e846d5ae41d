"""apply_gems_patches_to_vllm: against the real vLLM where importable (``make test-vllm``
installs it; the plain suite skips those tests), and its mechanics (skip messages, exclude,
undo) against a minimal stand-in package everywhere."""
import ast
import inspect
import os
import sys
import textwrap

import pytest
import torch

import gemsops
from gemsops import vllm_patches
from tests.ops.attention_ref import gather_flash, gather_vllm_key, gather_vllm_value, ref_attention
from tests.util import DEVICE, assert_close, randn

if DEVICE == "cpu" and "vllm" not in sys.modules:
    # vLLM turns its Triton kernels off unless exactly one GPU driver is active, or
    # CUDA_VISIBLE_DEVICES is set empty (its distributed start-up case). The interpreter needs
    # no driver, and with this set vLLM's own Triton kernels run here as the reference.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

STAND_IN = {
    "vllm/__init__.py": '__version__ = "0.0.1"\n',
    "vllm/model_executor/__init__.py": "",
    "vllm/model_executor/layers/__init__.py": "",
    "vllm/model_executor/layers/layernorm.py": """
        import torch
        class RMSNorm(torch.nn.Module):
            def __init__(self, hidden, eps=1e-6):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.ones(hidden))
                self.variance_epsilon = eps
                self.variance_size_override = None
                self.has_weight = True
            def forward_native(self, x, residual=None):
                if residual is not None:
                    residual = residual + x
                    x = residual
                var = x.float().pow(2).mean(-1, keepdim=True)
                out = (x.float() * torch.rsqrt(var + self.variance_epsilon)).to(x.dtype) * self.weight
                return out if residual is None else (out, residual)
            def forward_cuda(self, x, residual=None):
                return self.forward_native(x, residual)
    """,
    "vllm/model_executor/layers/activation.py": """
        import torch.nn.functional as F
        class SiluAndMul:
            def forward_native(self, x):
                d = x.shape[-1] // 2
                return F.silu(x[..., :d]) * x[..., d:]
            def forward_cuda(self, x):
                return self.forward_native(x)
    """,
}


@pytest.fixture
def stand_in_vllm(tmp_path, monkeypatch):
    for rel, text in STAND_IN.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    saved = {name: mod for name, mod in sys.modules.items() if name == "vllm" or name.startswith("vllm.")}
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_patch_skip_and_undo_on_a_stand_in(stand_in_vllm):
    from vllm.model_executor.layers.activation import SiluAndMul
    from vllm.model_executor.layers.layernorm import RMSNorm

    originals = (RMSNorm.forward_cuda, SiluAndMul.forward_cuda)
    with pytest.warns(UserWarning, match="vLLM 0.0.1 found"):
        handle = gemsops.apply_gems_patches_to_vllm(exclude=["SiluAndMul"])
    assert handle.patched == ["RMSNorm.forward_cuda"]
    assert handle.skipped["SiluAndMul"] == "excluded"
    assert handle.skipped["GeluAndMul"].startswith("not in this vLLM")
    assert handle.skipped["reshape_and_cache"].startswith("not in this vLLM")

    layer = RMSNorm(64).to(DEVICE)
    x, res = randn(5, 64), randn(5, 64)
    assert_close(layer.forward_cuda(x), layer.forward_native(x))
    want_out, want_res = layer.forward_native(x.clone(), res.clone())
    got_out, got_res = layer.forward_cuda(x.clone(), res.clone())
    assert_close(got_out, want_out)
    assert_close(got_res, want_res)

    handle.undo()
    assert (RMSNorm.forward_cuda, SiluAndMul.forward_cuda) == originals


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import of vllm raises ImportError
    with pytest.raises(ImportError, match="vLLM is not importable"):
        gemsops.apply_gems_patches_to_vllm()


# ---- the real vLLM --------------------------------------------------------------------

def _unavailable(reason):
    # make test-vllm sets GEMS_REQUIRE_VLLM: there, a broken install must not pass as skipped
    if os.environ.get("GEMS_REQUIRE_VLLM"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def vllm_config():
    """A vLLM config context (layers read it when built), or a skip where vLLM is absent."""
    try:
        from vllm.config import DeviceConfig, VllmConfig, set_current_vllm_config
    except Exception as err:  # absent, or its import needs what this machine lacks
        _unavailable(f"vLLM not importable here: {err}")
    with set_current_vllm_config(VllmConfig(device_config=DeviceConfig(device=DEVICE))):
        yield


@pytest.fixture
def patched(vllm_config):
    handle = gemsops.apply_gems_patches_to_vllm()
    yield handle
    handle.undo()


class Spy:
    """Stands in for an original vLLM function: counts calls, then runs the real one."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_real_vllm_version_and_targets(patched):
    import vllm

    assert vllm.__version__.split("+")[0] == vllm_patches.TESTED_VLLM
    for name in ("RMSNorm.forward_cuda", "SiluAndMul.forward_cuda", "GeluAndMul.forward_cuda",
                 "RotaryEmbedding.forward_cuda", "vllm._custom_ops.reshape_and_cache",
                 "vllm._custom_ops.reshape_and_cache_flash",
                 "vllm.v1.attention.backends.triton_attn.unified_attention",
                 "vllm.v1.attention.backends.triton_attn.triton_reshape_and_cache_flash"):
        assert name in patched.patched, (name, patched.skipped)


@pytest.mark.parametrize("custom_ops, reaches_gems", [(["all"], True), (["none", "+rms_norm"], True), (["none"], False)])
def test_real_layers_built_after_patching_call_gems_when_vllm_runs_custom_ops(monkeypatch, custom_ops,
                                                                             reaches_gems):
    """vLLM binds each layer's forward when the layer is built: forward_cuda where its custom
    ops are on (enforce_eager, or custom_ops 'all' / '+rms_norm'), forward_native compiled by
    Inductor where they are off (its torch.compile default)."""
    try:
        from vllm.config import CompilationConfig, DeviceConfig, VllmConfig, set_current_vllm_config
        from vllm.model_executor.layers.layernorm import RMSNorm
    except Exception as err:
        _unavailable(f"vLLM not importable here: {err}")
    config = VllmConfig(device_config=DeviceConfig(device=DEVICE),
                        compilation_config=CompilationConfig(custom_ops=custom_ops))
    spy = Spy(gemsops.ops.rms_norm)
    monkeypatch.setattr(gemsops.ops, "rms_norm", spy)
    with set_current_vllm_config(config):
        handle = gemsops.apply_gems_patches_to_vllm()
        try:
            norm = RMSNorm(64).to(DEVICE)
            x = randn(3, 64)
            out = norm(x)
        finally:
            handle.undo()
        assert_close(out, norm.forward_native(x))
    assert spy.calls == (1 if reaches_gems else 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_weight", [True, False])
def test_real_rms_norm_matches_forward_native(patched, dtype, has_weight):
    from vllm.model_executor.layers.layernorm import RMSNorm

    norm = RMSNorm(128, eps=1e-5, has_weight=has_weight, dtype=dtype).to(DEVICE)
    if has_weight:
        norm.weight.data.normal_()
    for shape in [(6, 128), (2, 3, 128)]:
        x, res = randn(*shape, dtype=dtype), randn(*shape, dtype=dtype)
        assert_close(norm.forward_cuda(x), norm.forward_native(x))
        want = norm.forward_native(x.clone(), res.clone())
        got = norm.forward_cuda(x.clone(), res.clone())
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_activations_match_forward_native(patched, dtype):
    from vllm.model_executor.layers.activation import GeluAndMul, SiluAndMul

    x = randn(6, 3, 256, dtype=dtype)
    act = SiluAndMul()
    assert_close(act.forward_cuda(x), act.forward_native(x))
    for approximate in ("none", "tanh"):
        act = GeluAndMul(approximate=approximate)
        assert_close(act.forward_cuda(x), act.forward_native(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rotary_dim", [64, 32])  # 32: partial rotary, the rest passes through
def test_real_rotary_embedding_matches_forward_native(patched, dtype, is_neox, rotary_dim):
    from vllm.model_executor.layers.rotary_embedding import RotaryEmbedding

    rope = RotaryEmbedding(64, rotary_dim, 128, 10000.0, is_neox, dtype).to(DEVICE)
    pos = torch.randint(0, 128, (6,), device=DEVICE)
    q, k = randn(6, 4 * 64, dtype=dtype), randn(6, 2 * 64, dtype=dtype)
    want_q, want_k = rope.forward_native(pos, q.clone(), k.clone())
    got_q, got_k = rope.forward_cuda(pos, q.clone(), k.clone())
    assert_close(got_q, want_q)
    assert_close(got_k, want_k)
    got_q, got_k = rope.forward_cuda(pos, q.clone(), None)  # cross-layer KV sharing passes no key
    assert got_k is None
    assert_close(got_q, want_q)

    # vLLM's attention layers pass q and k as column slices of the fused qkv projection
    qkv = torch.cat([q, k, randn(6, 2 * 64, dtype=dtype)], dim=-1)
    q_view, k_view, v_view = qkv.split([4 * 64, 2 * 64, 2 * 64], dim=-1)
    v_before = v_view.clone()
    rope.forward_cuda(pos, q_view, k_view)
    assert_close(q_view, want_q)
    assert_close(k_view, want_k)
    assert torch.equal(v_view, v_before)


def _slots(num_tokens, num_blocks, block_size):
    slots = torch.randperm(num_blocks * block_size, device=DEVICE)[:num_tokens]
    slots[1] = -1  # padding: skipped
    return slots


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_real_cache_writers_reach_gems(vllm_config, monkeypatch, dtype):
    import vllm._custom_ops as custom_ops

    # vLLM's writers only count their calls here: on CPU their kernels do not exist, and the
    # fp8 call below would need a real fp8 cache on a GPU
    spies = {name: Spy(lambda *args, **kwargs: None) for name in ("reshape_and_cache", "reshape_and_cache_flash")}
    for name, spy in spies.items():
        monkeypatch.setattr(custom_ops, name, spy)
    handle = gemsops.apply_gems_patches_to_vllm()
    try:
        t, h, d, bs, nb = 7, 2, 64, 16, 4
        key, value = randn(t, h, d, dtype=dtype), randn(t, h, d, dtype=dtype)
        slots = _slots(t, nb, bs)
        rows = torch.arange(nb, device=DEVICE)

        # vLLM 0.33's cache: one tensor [blocks, kv heads, block, 2 * head] viewed as K and V
        kv = torch.zeros(nb, h, bs, 2 * d, dtype=dtype, device=DEVICE)
        key_cache, value_cache = kv.transpose(1, 2).split(d, dim=-1)
        custom_ops.reshape_and_cache_flash(key, value, key_cache, value_cache, slots, "auto", None, None)
        got_k, got_v = gather_flash(key_cache, rows, nb * bs), gather_flash(value_cache, rows, nb * bs)

        x = 16 // key.element_size()
        kc = torch.zeros(nb, h, d // x, bs, x, dtype=dtype, device=DEVICE)
        vc = torch.zeros(nb, h, d, bs, dtype=dtype, device=DEVICE)
        custom_ops.reshape_and_cache(key, value, kc, vc, slots, "auto", None, None, False)  # interleaved_v=False
        assert (spies["reshape_and_cache"].calls, spies["reshape_and_cache_flash"].calls) == (0, 0)

        want_k = torch.zeros(nb * bs, h, d, dtype=dtype, device=DEVICE)
        want_v = torch.zeros_like(want_k)
        keep = slots >= 0
        want_k[slots[keep]], want_v[slots[keep]] = key[keep], value[keep]
        assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
        assert torch.equal(gather_vllm_key(kc, rows, nb * bs), want_k)
        assert torch.equal(gather_vllm_value(vc, rows, nb * bs), want_v)

        # a quantized cache stays with vLLM
        custom_ops.reshape_and_cache_flash(key, value, key_cache, value_cache, slots, "fp8", None, None)
        assert spies["reshape_and_cache_flash"].calls == 1
    finally:
        handle.undo()


def _attention_case(backend, dtype, q_lens, seq_lens, *, sliding_window=None, softcap=None):
    """A vLLM attention impl of ``backend`` ("triton" or "flash") with its metadata, cache and
    inputs, built as vLLM's model runner builds them (cache ``[blocks, kv heads, block, 2 * head]``)."""
    from vllm.v1.attention.backends import flash_attn, triton_attn

    h, hkv, d, bs = 4, 2, 64, 16
    impl_class = triton_attn.TritonAttentionImpl if backend == "triton" else flash_attn.FlashAttentionImpl
    impl = impl_class(num_heads=h, head_size=d, scale=d ** -0.5, num_kv_heads=hkv, alibi_slopes=None,
                      sliding_window=sliding_window, kv_cache_dtype="auto", logits_soft_cap=softcap)
    layer = torch.nn.Module()
    for name in ("_q_scale", "_k_scale", "_v_scale"):
        setattr(layer, name, torch.ones((), device=DEVICE))
    blocks_per_seq = max(-(-n // bs) for n in seq_lens)
    nb = len(seq_lens) * blocks_per_seq + 1
    block_table = (torch.randperm(nb - 1, device=DEVICE)[: len(seq_lens) * blocks_per_seq]
                   .view(len(seq_lens), blocks_per_seq).to(torch.int32))
    slots = [int(block_table[b, p // bs]) * bs + p % bs
             for b, (ql, n) in enumerate(zip(q_lens, seq_lens)) for p in range(n - ql, n)]
    t = sum(q_lens)
    common = dict(
        num_actual_tokens=t, max_query_len=max(q_lens),
        query_start_loc=torch.tensor([0, *q_lens], device=DEVICE).cumsum(0).to(torch.int32),
        max_seq_len=max(seq_lens), seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
        block_table=block_table, slot_mapping=torch.tensor(slots, device=DEVICE), causal=True)
    if backend == "triton":
        segments = triton_attn.NUM_PAR_SOFTMAX_SEGMENTS
        metadata = triton_attn.TritonAttentionMetadata(
            **common, seq_threshold_3D=triton_attn.MIN_LAUNCH_GRID_SIZE_2D // hkv,
            num_par_softmax_segments=segments, softmax_segm_output=torch.empty(64, h, segments, d, device=DEVICE),
            softmax_segm_max=torch.empty(64, h, segments, device=DEVICE),
            softmax_segm_expsum=torch.empty(64, h, segments, device=DEVICE))
    else:
        metadata = flash_attn.FlashAttentionMetadata(**common)
    kv_cache = randn(nb, hkv, bs, 2 * d, dtype=dtype)
    q, k, v = randn(t, h, d, dtype=dtype), randn(t, hkv, d, dtype=dtype), randn(t, hkv, d, dtype=dtype)
    return impl, layer, metadata, kv_cache, (q, k, v)


def _run_backend(case):
    impl, layer, metadata, kv_cache, (q, k, v) = case
    kv_cache = kv_cache.clone()
    out = torch.full_like(q, float("nan"))
    impl.do_kv_cache_update(layer, k, v, kv_cache, metadata.slot_mapping)
    impl.forward(layer, q, k, v, kv_cache, metadata, out)
    return out, kv_cache


def _attention_from_cache(case, kv_cache):
    """float64 attention of each sequence's queries over the keys ``kv_cache`` holds for it."""
    _, _, metadata, _, (q, _, _) = case
    d = q.shape[-1]
    key_cache, value_cache = kv_cache.transpose(1, 2).split(d, dim=-1)
    out, starts = torch.empty_like(q), metadata.query_start_loc.tolist()
    for b, n in enumerate(metadata.seq_lens.tolist()):
        rows = slice(starts[b], starts[b + 1])
        table = metadata.block_table[b]
        out[rows] = ref_attention(q[rows], gather_flash(key_cache, table, n), gather_flash(value_cache, table, n),
                                  causal=True).to(q.dtype)
    return out


@pytest.fixture
def triton_backend(vllm_config, monkeypatch):
    """vLLM's Triton attention backend with spies on its two kernels (vLLM's own Triton code)."""
    from vllm.triton_utils import HAS_TRITON
    from vllm.v1.attention.backends import triton_attn

    if not HAS_TRITON:
        _unavailable("vLLM disabled its Triton kernels on this machine")
    if DEVICE == "cpu":  # vLLM's cache writer asks the GPU generation; Hopper's answer
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: (9, 0))
    spies = {}
    for name in ("unified_attention", "triton_reshape_and_cache_flash"):
        spies[name] = Spy(getattr(triton_attn, name))
        monkeypatch.setattr(triton_attn, name, spies[name])
    return spies


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("q_lens, seq_lens", [
    ([5, 1, 1], [20, 33, 7]),  # chunked prefill beside decodes
    ([1, 1, 1, 1], [40, 1, 17, 64]),  # decode only: gems' split-KV decode kernel
])
def test_real_triton_attention_backend_matches_vllm_kernels(triton_backend, dtype, q_lens, seq_lens):
    case = _attention_case("triton", dtype, q_lens, seq_lens)
    want_out, want_cache = _run_backend(case)  # vLLM's own Triton kernels
    assert triton_backend["unified_attention"].calls == 1
    if DEVICE == "cpu" and dtype == torch.bfloat16:
        # the interpreter's bf16 tl.dot is wrong (it multiplies raw storage), so vLLM's
        # attention kernel gives garbage here; its cache writer only copies and stays exact
        want_out = _attention_from_cache(case, want_cache)

    handle = gemsops.apply_gems_patches_to_vllm()
    try:
        got_out, got_cache = _run_backend(case)
    finally:
        handle.undo()
    assert triton_backend["unified_attention"].calls == 1  # gems ran, not vLLM
    assert triton_backend["triton_reshape_and_cache_flash"].calls == 1
    assert torch.equal(got_cache, want_cache)
    assert_close(got_out, want_out, scale=2.0)


@pytest.mark.parametrize("option", [dict(sliding_window=8), dict(softcap=30.0)])
def test_real_triton_attention_options_gems_lacks_stay_with_vllm(triton_backend, option):
    case = _attention_case("triton", torch.float16, [3, 1], [12, 9], **option)
    handle = gemsops.apply_gems_patches_to_vllm()
    try:
        _run_backend(case)
    finally:
        handle.undo()
    assert triton_backend["unified_attention"].calls == 1


def _keywords_at_calls(module, function_names):
    """Keyword names that ``module``'s source passes at its calls of ``function_names``."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in function_names:
            names.update(kw.arg for kw in node.keywords if kw.arg)
    return names


def test_every_attention_option_this_vllm_passes_is_known(vllm_config):
    """A keyword the patch does not know sends each call back to vLLM: correct, but gems is
    then bypassed. This catches a vLLM upgrade that adds one."""
    from vllm.v1.attention.backends import flash_attn, triton_attn

    accepted = set(inspect.signature(vllm_patches._varlen_forward(None)).parameters) | set(vllm_patches._FA_NEUTRAL)
    passed = _keywords_at_calls(flash_attn, {"flash_attn_varlen_func", "_FA4_DENSE_ATTENTION_KERNEL"})
    assert passed and passed <= accepted, passed - accepted
    accepted = set(inspect.signature(vllm_patches._unified_attention_forward(None)).parameters)
    accepted |= set(vllm_patches._UNIFIED_NEUTRAL)
    passed = _keywords_at_calls(triton_attn, {"unified_attention"})
    assert passed and passed <= accepted, passed - accepted


def _absent_on_cpu(name):
    def vllm_kernel(*args, **kwargs):  # what a CUDA build of vLLM imports into the backend
        raise AssertionError(f"the call went to vLLM's {name}")

    return vllm_kernel


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("q_lens, seq_lens", [([5, 1, 1], [20, 33, 7]), ([1, 1], [40, 17])])
def test_real_flash_attn_backend_reaches_gems(vllm_config, monkeypatch, dtype, q_lens, seq_lens):
    """vLLM's FlashAttention backend, cache write plus attention, as on a Hopper build (FA3):
    every call lands in gems. Its kernels exist only in CUDA builds, so stand-ins that fail
    take their place before patching."""
    from vllm.v1.attention.backends import flash_attn

    for name in ("flash_attn_varlen_func", "reshape_and_cache_flash"):
        monkeypatch.setattr(flash_attn, name, _absent_on_cpu(name), raising=False)
    case = _attention_case("flash", dtype, q_lens, seq_lens)
    case[0].vllm_flash_attn_version = 3
    handle = gemsops.apply_gems_patches_to_vllm()
    try:
        out, kv_cache = _run_backend(case)
    finally:
        handle.undo()
    _, _, metadata, before, (q, k, v) = case
    want_cache = before.clone()
    d = q.shape[-1]
    key_cache, value_cache = want_cache.transpose(1, 2).split(d, dim=-1)
    bs = key_cache.shape[1]
    for token, slot in enumerate(metadata.slot_mapping.tolist()):
        key_cache[slot // bs, slot % bs], value_cache[slot // bs, slot % bs] = k[token], v[token]
    assert torch.equal(kv_cache, want_cache)
    assert_close(out, _attention_from_cache(case, want_cache), scale=2.0)


@pytest.mark.parametrize("setting, patched_rms_norm", [(None, False), ("1", True), ("-RMSNorm", False)])
def test_vllm_plugin_patches_each_vllm_process_when_asked(vllm_config, monkeypatch, setting, patched_rms_norm):
    """vLLM calls gems' entry point in every process it starts (engine core, workers)."""
    from importlib.metadata import entry_points

    import vllm.plugins
    from vllm.model_executor.layers.layernorm import RMSNorm

    if "gemsops" not in {ep.name for ep in entry_points(group=vllm.plugins.DEFAULT_PLUGINS_GROUP)}:
        pytest.fail("gemsops' vLLM entry point is not installed: reinstall gemsops (pip install -e .)")
    if setting is None:
        monkeypatch.delenv(vllm_patches.PLUGIN_ENV, raising=False)
    else:
        monkeypatch.setenv(vllm_patches.PLUGIN_ENV, setting)
    monkeypatch.setattr(vllm.plugins, "plugins_loaded", False)
    monkeypatch.setattr(vllm_patches, "_plugin_handle", None)
    original = RMSNorm.forward_cuda
    vllm.plugins.load_general_plugins()  # what each vLLM process does at start-up
    handle = vllm_patches._plugin_handle
    try:
        assert (RMSNorm.forward_cuda is not original) == patched_rms_norm
        assert (handle is not None) == (setting is not None)
        if handle is not None:
            assert "vllm.v1.attention.backends.triton_attn.unified_attention" in handle.patched
            assert vllm_patches.vllm_plugin() is handle  # a second load changes nothing
    finally:
        if handle is not None:
            handle.undo()
    assert RMSNorm.forward_cuda is original


def test_vllm_plugin_rejects_a_bad_setting(monkeypatch):
    monkeypatch.setenv(vllm_patches.PLUGIN_ENV, "yes")
    monkeypatch.setattr(vllm_patches, "_plugin_handle", None)
    with pytest.raises(ValueError, match="GEMS_VLLM_PATCHES='yes'"):
        vllm_patches.vllm_plugin()

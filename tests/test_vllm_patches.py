"""apply_gems_patches_to_vllm: against the real vLLM where importable, and its mechanics
(skip messages, exclude, undo) against a minimal stand-in package everywhere."""
import sys
import textwrap

import pytest
import torch

import gemsops
from tests.util import DEVICE, assert_close, randn

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


def _real_vllm_layers():
    try:
        from vllm.model_executor.layers import activation, layernorm, rotary_embedding
    except Exception as err:  # absent, or its import needs what this machine lacks
        pytest.skip(f"vLLM not importable here: {err}")
    return layernorm, activation, rotary_embedding


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_vllm_layers_match_their_forward_native(dtype):
    layernorm, activation, rotary = _real_vllm_layers()
    handle = gemsops.apply_gems_patches_to_vllm()
    try:
        assert "RMSNorm.forward_cuda" in handle.patched
        norm = layernorm.RMSNorm(128, eps=1e-5).to(device=DEVICE, dtype=dtype)
        norm.weight.data.normal_()
        x, res = randn(6, 128, dtype=dtype), randn(6, 128, dtype=dtype)
        assert_close(norm.forward_cuda(x), norm.forward_native(x))
        want = norm.forward_native(x.clone(), res.clone())
        got = norm.forward_cuda(x.clone(), res.clone())
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])

        act = activation.SiluAndMul()
        y = randn(6, 256, dtype=dtype)
        assert_close(act.forward_cuda(y), act.forward_native(y))

        rope = rotary.RotaryEmbedding(64, 32, 128, 10000.0, True, dtype).to(DEVICE)
        pos = torch.randint(0, 128, (6,), device=DEVICE)
        q, k = randn(6, 4 * 64, dtype=dtype), randn(6, 2 * 64, dtype=dtype)
        want_q, want_k = rope.forward_native(pos, q.clone(), k.clone())
        got_q, got_k = rope.forward_cuda(pos, q.clone(), k.clone())
        assert_close(got_q, want_q)
        assert_close(got_k, want_k)
    finally:
        handle.undo()

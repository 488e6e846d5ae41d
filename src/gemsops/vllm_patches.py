"""Route vLLM's hot layers and kernels to gems: ``gemsops.apply_gems_patches_to_vllm()``.

Each patch replaces one attribute (a layer's ``forward_cuda`` or a kernel wrapper
function) and remembers the original, so ``handle.undo()`` restores vLLM exactly.
Targets that the installed vLLM lacks, or whose gems op is missing, are skipped with a
message. vLLM's ``CustomOp`` binds its forward method when a layer is built, so apply the
patches before the model is constructed (as vLLM plugins do).

Tested against vLLM 0.33.0 (layer classes on CPU through the interpreter vendor).
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field

from . import ops

TESTED_VLLM = "0.33.0"


@dataclass
class PatchHandle:
    """What was patched, what was skipped and why; ``undo()`` puts vLLM back."""

    applied: list = field(default_factory=list)  # (owner, attribute name, original)
    skipped: dict = field(default_factory=dict)  # target -> reason

    @property
    def patched(self) -> list[str]:
        return [f"{getattr(o, '__qualname__', getattr(o, '__name__', o))}.{name}" for o, name, _ in self.applied]

    def undo(self) -> None:
        for owner, name, original in reversed(self.applied):
            setattr(owner, name, original)
        self.applied.clear()


# ---- replacements ---------------------------------------------------------------------
# Each factory takes the original attribute and returns the replacement; the replacement
# calls the original for anything gems does not cover.

def _rms_norm_forward(original):
    def forward_cuda(self, x, residual=None):
        if getattr(self, "variance_size_override", None) is not None:
            return original(self, x, residual)
        weight = self.weight.data if getattr(self, "has_weight", True) else None
        if residual is None:
            return ops.rms_norm(x, (x.shape[-1],), weight, self.variance_epsilon)
        return ops.fused_add_rms_norm(x, residual, weight, self.variance_epsilon)

    return forward_cuda


def _silu_and_mul_forward(original):
    def forward_cuda(self, x):
        return ops.silu_and_mul(x)

    return forward_cuda


def _gelu_and_mul_forward(original):
    def forward_cuda(self, x):
        return ops.gelu_and_mul(x, approximate=self.approximate)

    return forward_cuda


def _rotary_forward(original):
    def forward_cuda(self, positions, query, key=None, *args, **kwargs):
        if args or kwargs or not hasattr(self, "_match_cos_sin_cache_dtype"):
            return original(self, positions, query, key, *args, **kwargs)
        cos_sin_cache = self._match_cos_sin_cache_dtype(query)
        ops.rotary_embedding(positions, query, key, self.head_size, cos_sin_cache, self.is_neox_style)
        return query, key

    return forward_cuda


def _cache_writer(gems_fn):
    def factory(original):
        def writer(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype="auto",
                   k_scale=None, v_scale=None, *args, **kwargs):
            if kv_cache_dtype != "auto" or args or any(kwargs.values()):
                return original(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype,
                                k_scale, v_scale, *args, **kwargs)
            return gems_fn(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale)

        return writer

    return factory


# keyword arguments of vLLM's flash_attn_varlen_func that gems accepts, with the values
# under which gems' semantics equal FlashAttention's
_VARLEN_NEUTRAL = {
    "dropout_p": 0.0, "window_size": None, "softcap": 0.0, "alibi_slopes": None,
    "deterministic": False, "return_attn_probs": False, "return_softmax_lse": False,
    "fa_version": None, "q_descale": None, "k_descale": None, "v_descale": None,
    "scheduler_metadata": None, "num_splits": 0, "s_aux": None, "q_v": None, "output_scale": None,
}


def _varlen_forward(original):
    def flash_attn_varlen_func(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k=None,
                               seqused_k=None, *args, softmax_scale=None, causal=False, block_table=None,
                               out=None, **kwargs):
        extra = {n: val for n, val in kwargs.items()
                 if n not in _VARLEN_NEUTRAL or not _is_neutral(n, val)}
        if args or extra:
            return original(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k, seqused_k,
                            *args, softmax_scale=softmax_scale, causal=causal, block_table=block_table,
                            out=out, **kwargs)
        return ops.flash_attn_varlen_func(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, max_seqlen_k,
                                          seqused_k=seqused_k, softmax_scale=softmax_scale, causal=causal,
                                          block_table=block_table, out=out)

    return flash_attn_varlen_func


def _is_neutral(name, value) -> bool:
    neutral = _VARLEN_NEUTRAL[name]
    if name == "window_size":
        return value is None or tuple(value) == (-1, -1)
    if name == "fa_version":
        return True
    return value is neutral or value == neutral


# (target name, module, attribute path, gems op it needs, replacement factory)
_TARGETS = [
    ("RMSNorm", "vllm.model_executor.layers.layernorm", "RMSNorm.forward_cuda",
     ("rms_norm", "fused_add_rms_norm"), _rms_norm_forward),
    ("SiluAndMul", "vllm.model_executor.layers.activation", "SiluAndMul.forward_cuda",
     ("silu_and_mul",), _silu_and_mul_forward),
    ("GeluAndMul", "vllm.model_executor.layers.activation", "GeluAndMul.forward_cuda",
     ("gelu_and_mul",), _gelu_and_mul_forward),
    ("RotaryEmbedding", "vllm.model_executor.layers.rotary_embedding", "RotaryEmbedding.forward_cuda",
     ("rotary_embedding",), _rotary_forward),
    ("reshape_and_cache", "vllm._custom_ops", "reshape_and_cache",
     ("reshape_and_cache",), lambda orig: _cache_writer(ops.reshape_and_cache)(orig)),
    ("reshape_and_cache_flash", "vllm._custom_ops", "reshape_and_cache_flash",
     ("reshape_and_cache_flash",), lambda orig: _cache_writer(ops.reshape_and_cache_flash)(orig)),
    # the FlashAttention backend imports both kernels into its own namespace
    ("flash_attn_backend.reshape_and_cache_flash", "vllm.v1.attention.backends.flash_attn",
     "reshape_and_cache_flash", ("reshape_and_cache_flash",),
     lambda orig: _cache_writer(ops.reshape_and_cache_flash)(orig)),
    ("flash_attn_varlen_func", "vllm.v1.attention.backends.flash_attn", "flash_attn_varlen_func",
     ("flash_attn_varlen_func",), _varlen_forward),
]


def apply_gems_patches_to_vllm(verbose: bool = False, exclude=()) -> PatchHandle:
    """Patch the installed vLLM to use gems kernels; returns a handle with ``undo()``.

    ``exclude`` names targets to leave alone (``"RMSNorm"``, ``"SiluAndMul"``,
    ``"GeluAndMul"``, ``"RotaryEmbedding"``, ``"reshape_and_cache"``,
    ``"reshape_and_cache_flash"``, ``"flash_attn_backend.reshape_and_cache_flash"``,
    ``"flash_attn_varlen_func"``).
    """
    handle = PatchHandle()
    try:
        vllm = importlib.import_module("vllm")
    except Exception as err:  # not installed, or fails to import on this machine
        raise ImportError(f"gemsops: vLLM is not importable ({err})") from err
    version = getattr(vllm, "__version__", "unknown")
    if version.split("+")[0] != TESTED_VLLM:
        warnings.warn(f"gemsops: vLLM {version} found, patches were tested with {TESTED_VLLM}; "
                      "targets that are missing are skipped", stacklevel=2)
    unknown = set(exclude) - {t[0] for t in _TARGETS}
    if unknown:
        warnings.warn(f"gemsops: unknown vLLM patch targets in exclude: {sorted(unknown)}", stacklevel=2)
    for name, module_name, attr_path, needs, factory in _TARGETS:
        if name in exclude:
            handle.skipped[name] = "excluded"
            continue
        missing = [op for op in needs if not hasattr(ops, op)]
        if missing:
            handle.skipped[name] = f"gems has no {', '.join(missing)}"
            continue
        try:
            owner = importlib.import_module(module_name)
            *parents, attr = attr_path.split(".")
            for p in parents:
                owner = getattr(owner, p)
            original = getattr(owner, attr)
        except Exception as err:
            handle.skipped[name] = f"not in this vLLM ({type(err).__name__}: {err})"
            continue
        setattr(owner, attr, factory(original))
        handle.applied.append((owner, attr, original))
    if verbose:
        for p in handle.patched:
            print(f"gemsops: patched vLLM {p}")
        for name, why in handle.skipped.items():
            print(f"gemsops: skipped vLLM {name}: {why}")
    return handle

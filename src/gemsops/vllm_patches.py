"""Route vLLM's hot layers and kernels to gems: ``gemsops.apply_gems_patches_to_vllm()``.

Each patch replaces one attribute (a layer's ``forward_cuda`` or a kernel wrapper
function) and remembers the original, so ``handle.undo()`` restores vLLM exactly.
Targets that the installed vLLM lacks, or whose gems op is missing, are skipped with a
message. vLLM's ``CustomOp`` binds its forward method when a layer is built, so apply the
patches before the model is constructed (as vLLM plugins do).

The layer patches (RMSNorm, SiluAndMul, GeluAndMul, RotaryEmbedding) replace ``forward_cuda``,
which vLLM calls only where its custom ops are on: ``enforce_eager=True``, or
``compilation_config={"custom_ops": ["all"]}`` (or ``"+rms_norm"``, ``"+silu_and_mul"``, ...).
Under vLLM's torch.compile default (``custom_ops=["none"]``) those layers run
``forward_native`` compiled by Inductor (RMSNorm lowering to vLLM's own kernels through its
IR op priorities, where gems is not registered), and the layer patches stay idle. The attention and
KV-cache patches act in every mode: vLLM calls them from inside its own opaque custom ops.

Tested against vLLM 0.33.0 on CPU through the interpreter vendor (``make test-vllm``): the
layers against their own ``forward_native``, the Triton attention backend against vLLM's own
Triton kernels, the cache writers against plain indexing.
"""
from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field

import torch

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
        # vLLM 0.33 says per path whether the weight is applied (pass_weight, pass_weight_add);
        # earlier versions have one has_weight
        use_weight = getattr(self, "pass_weight" if residual is None else "pass_weight_add",
                             getattr(self, "has_weight", True))
        weight = self.weight.data if use_weight else None
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


# kv_cache_dtype values under which the cache holds the model's own dtype (no quantization)
_UNQUANTIZED_CACHE = {"auto": None, "float16": torch.float16, "half": torch.float16,
                      "bfloat16": torch.bfloat16, "float32": torch.float32, "float": torch.float32}


def _cache_writer(op_name):
    def factory(original):
        gems_fn = getattr(ops, op_name)

        def writer(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype="auto",
                   k_scale=None, v_scale=None, *args, **kwargs):
            # trailing options (vLLM 0.33: interleaved_v) are neutral when unset or False
            options_unset = all(a is None or a is False for a in (*args, *kwargs.values()))
            unquantized = (kv_cache_dtype in _UNQUANTIZED_CACHE
                           and _UNQUANTIZED_CACHE[kv_cache_dtype] in (None, key_cache.dtype))
            if not (options_unset and unquantized):
                return original(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype,
                                k_scale, v_scale, *args, **kwargs)
            return gems_fn(key, value, key_cache, value_cache, slot_mapping, "auto", k_scale, v_scale)

        return writer

    return factory


# ---- attention: which keyword arguments gems may ignore --------------------------------
# vLLM's attention entry points take many options. Gems implements plain softmax attention
# (causal or not, GQA, paged or packed K/V), so a call goes to gems only when every other
# option holds a value under which the original computes the same thing. A keyword that no
# table knows (a newer vLLM's addition) sends the call to the original: slower, never wrong.

def _unset(value, q, k):
    return value is None


def _ignored(value, q, k):  # scheduling hints and scratch buffers: they change speed, not results
    return True


def _false(value, q, k):
    return not value


def _no_window(value, q, k):
    return value is None or tuple(value) == (-1, -1)


def _fp8_only(value, q, k):
    # FlashAttention and vLLM's Triton kernel apply descale factors to FP8 data only
    return value is None or (q.element_size() > 1 and k.element_size() > 1)


def _equals(neutral):
    return lambda value, q, k: value == neutral


def _quant_none(value, q, k):  # vLLM's KVQuantMode.NONE
    return getattr(value, "name", value) == "NONE"


_FA_NEUTRAL = {
    "dropout_p": _equals(0.0), "window_size": _no_window, "softcap": _false, "alibi_slopes": _unset,
    "deterministic": _ignored, "return_attn_probs": _false, "return_softmax_lse": _false,
    "fa_version": _ignored, "scheduler_metadata": _ignored, "num_splits": _ignored,
    "q_descale": _fp8_only, "k_descale": _fp8_only, "v_descale": _fp8_only,
    "s_aux": _unset, "q_v": _unset, "output_scale": _unset,
    "cp_world_size": _equals(1), "cp_rank": _equals(0), "cp_tot_seqused_k": _unset,
    "mask_mod": _unset, "block_sparse_tensors": _unset, "aux_tensors": _unset,
    "aux_tensor_leading_dims": _unset, "dynamic_causal": _unset,
    "gather_kv_indices": _unset, "gather_kv_valid_length": _unset,
}

_UNIFIED_NEUTRAL = {
    "window_size": _no_window, "softcap": _false, "alibi_slopes": _unset, "use_alibi_sqrt": _false,
    "q_descale": _fp8_only, "k_descale": _fp8_only, "v_descale": _fp8_only,
    "seq_threshold_3D": _ignored, "num_par_softmax_segments": _ignored, "softmax_segm_output": _ignored,
    "softmax_segm_max": _ignored, "softmax_segm_expsum": _ignored, "use_td": _ignored,
    "output_scale": _unset, "qq_bias": _unset, "sinks": _unset, "mm_prefix_range": _unset,
    "mm_prefix_clamp_sliding_window": _ignored,  # acts on mm_prefix_range only
    "rswa_prefix_lens": _unset, "rswa_window": _unset, "kv_quant_mode": _quant_none,
    "k_scale_cache": _unset, "v_scale_cache": _unset, "chunk_lookback": _equals(-1),
}


def _neutral(table, options, q, k) -> bool:
    return all(name in table and table[name](value, q, k) for name, value in options.items())


def _varlen_forward(original):
    def flash_attn_varlen_func(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k=None,
                               seqused_k=None, *args, softmax_scale=None, causal=False, block_table=None,
                               out=None, **options):
        if args or isinstance(causal, torch.Tensor) or not _neutral(_FA_NEUTRAL, options, q, k):
            return original(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k, seqused_k,
                            *args, softmax_scale=softmax_scale, causal=causal, block_table=block_table,
                            out=out, **options)
        return ops.flash_attn_varlen_func(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, max_seqlen_k,
                                          seqused_k=seqused_k, softmax_scale=softmax_scale, causal=causal,
                                          block_table=block_table, out=out)

    return flash_attn_varlen_func


def _unified_attention_forward(original):
    # vLLM's Triton backend: paged K/V in flash layout, results written into ``out``
    def unified_attention(q, k, v, out, cu_seqlens_q, max_seqlen_q, seqused_k, max_seqlen_k, softmax_scale,
                          causal, window_size, block_table, softcap, q_descale, k_descale, v_descale,
                          *args, **options):
        checked = dict(options, window_size=window_size, softcap=softcap, q_descale=q_descale,
                       k_descale=k_descale, v_descale=v_descale)
        if args or isinstance(causal, torch.Tensor) or not _neutral(_UNIFIED_NEUTRAL, checked, q, k):
            return original(q, k, v, out, cu_seqlens_q, max_seqlen_q, seqused_k, max_seqlen_k, softmax_scale,
                            causal, window_size, block_table, softcap, q_descale, k_descale, v_descale,
                            *args, **options)
        ops.flash_attn_varlen_func(q, k, v, cu_seqlens_q, max_seqlen_q, None, max_seqlen_k,
                                   seqused_k=seqused_k, softmax_scale=softmax_scale, causal=bool(causal),
                                   block_table=block_table, out=out)

    return unified_attention


def _batch_invariant() -> str | None:
    try:
        envs = importlib.import_module("vllm.envs")
    except ImportError:  # a vLLM without the switch
        return None
    return "vLLM's batch-invariant mode is on" if getattr(envs, "VLLM_BATCH_INVARIANT", False) else None


_FLASH = "vllm.v1.attention.backends.flash_attn"
_TRITON = "vllm.v1.attention.backends.triton_attn"

# (target name, module, attribute path, gems ops it needs, replacement factory[, reason-to-skip check])
_TARGETS = [
    ("RMSNorm", "vllm.model_executor.layers.layernorm", "RMSNorm.forward_cuda",
     ("rms_norm", "fused_add_rms_norm"), _rms_norm_forward, _batch_invariant),
    ("SiluAndMul", "vllm.model_executor.layers.activation", "SiluAndMul.forward_cuda",
     ("silu_and_mul",), _silu_and_mul_forward),
    ("GeluAndMul", "vllm.model_executor.layers.activation", "GeluAndMul.forward_cuda",
     ("gelu_and_mul",), _gelu_and_mul_forward),
    ("RotaryEmbedding", "vllm.model_executor.layers.rotary_embedding", "RotaryEmbedding.forward_cuda",
     ("rotary_embedding",), _rotary_forward),
    ("reshape_and_cache", "vllm._custom_ops", "reshape_and_cache",
     ("reshape_and_cache",), _cache_writer("reshape_and_cache")),
    ("reshape_and_cache_flash", "vllm._custom_ops", "reshape_and_cache_flash",
     ("reshape_and_cache_flash",), _cache_writer("reshape_and_cache_flash")),
    # the attention backends import their kernels into their own namespaces; the FlashAttention
    # names exist only where vLLM's FlashAttention build imports (CUDA)
    ("flash_attn_backend.reshape_and_cache_flash", _FLASH, "reshape_and_cache_flash",
     ("reshape_and_cache_flash",), _cache_writer("reshape_and_cache_flash")),
    ("flash_attn_varlen_func", _FLASH, "flash_attn_varlen_func",
     ("flash_attn_varlen_func",), _varlen_forward),
    ("triton_attn_backend.triton_reshape_and_cache_flash", _TRITON, "triton_reshape_and_cache_flash",
     ("reshape_and_cache_flash",), _cache_writer("reshape_and_cache_flash")),
    ("unified_attention", _TRITON, "unified_attention",
     ("flash_attn_varlen_func",), _unified_attention_forward),
]

TARGETS = tuple(t[0] for t in _TARGETS)


def apply_gems_patches_to_vllm(verbose: bool = False, exclude=()) -> PatchHandle:
    """Patch the installed vLLM to use gems kernels; returns a handle with ``undo()``.

    ``exclude`` names targets to leave alone: ``"RMSNorm"``, ``"SiluAndMul"``,
    ``"GeluAndMul"``, ``"RotaryEmbedding"``, ``"reshape_and_cache"``,
    ``"reshape_and_cache_flash"``, ``"flash_attn_backend.reshape_and_cache_flash"``,
    ``"flash_attn_varlen_func"``, ``"triton_attn_backend.triton_reshape_and_cache_flash"``,
    ``"unified_attention"`` (``TARGETS`` lists them).
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
    unknown = set(exclude) - set(TARGETS)
    if unknown:
        warnings.warn(f"gemsops: unknown vLLM patch targets in exclude: {sorted(unknown)}", stacklevel=2)
    for name, module_name, attr_path, needs, factory, *skip_check in _TARGETS:
        if name in exclude:
            handle.skipped[name] = "excluded"
            continue
        reason = skip_check[0]() if skip_check else None
        if reason:
            handle.skipped[name] = reason
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


# ---- vLLM plugin ------------------------------------------------------------------------
# vLLM runs the model in worker processes of its own (the V1 engine core, tensor-parallel
# workers), which do not inherit patches made in the user's process when they are spawned.
# vLLM loads its "vllm.general_plugins" entry points in every one of them; gemsops declares
# this function there (pyproject.toml). Installing gemsops must not change vLLM by itself,
# so the plugin acts only when GEMS_VLLM_PATCHES asks it to.

PLUGIN_ENV = "GEMS_VLLM_PATCHES"
_plugin_handle: PatchHandle | None = None


def vllm_plugin() -> PatchHandle | None:
    """vLLM plugin entry point: patch this process when ``GEMS_VLLM_PATCHES`` is set.

    ``GEMS_VLLM_PATCHES=1`` applies every target; ``GEMS_VLLM_PATCHES=-RotaryEmbedding,-unified_attention``
    applies all but the named ones. ``GEMS_VLLM_PATCHES_VERBOSE=1`` prints what was done.
    Unset, empty or ``0``: nothing happens. Applying twice in one process does nothing more.
    """
    global _plugin_handle
    setting = os.environ.get(PLUGIN_ENV, "").strip()
    if setting in ("", "0") or _plugin_handle is not None:
        return _plugin_handle
    words = [w.strip() for w in setting.split(",") if w.strip()]
    if any(w not in ("1", "all") and not w.startswith("-") for w in words):
        raise ValueError(f"gemsops: {PLUGIN_ENV}={setting!r}: expected 1, or a list of -TARGET to leave out "
                         f"(targets: {', '.join(TARGETS)})")
    exclude = [w[1:] for w in words if w.startswith("-")]
    verbose = os.environ.get(f"{PLUGIN_ENV}_VERBOSE", "") not in ("", "0")
    _plugin_handle = apply_gems_patches_to_vllm(verbose=verbose, exclude=exclude)
    return _plugin_handle

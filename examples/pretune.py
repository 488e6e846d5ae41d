"""Fill gemsops' persistent tuning cache before serving, so no request pays for tuning.

    python examples/pretune.py --model llama3-8b --max-tokens 8192 --dtype bf16
    python examples/pretune.py --from-log gems_oplog.txt        # shapes of a recorded run

A preset runs, for every token count 1, 2, 4, ... up to ``--max-tokens`` (the tuner's own
power-of-two buckets), the ops of one decoder layer with the model's sizes: embedding,
RMSNorm, the q/k/v/o and MLP projections (separate and fused, as Hugging Face and vLLM
lay them out), the LM head, SiLU-and-mul, rotary embedding, residual add, the sampling
softmax and causal and masked attention, all through ``gemsops.enable()`` plus the fused
``gemsops.ops`` functions the checkout has. ``--from-log`` reads a log written with
``gemsops.enable(record=True)`` (``runtime/oplog.py`` describes the format), rebuilds
random inputs of the logged shapes and dtypes and calls each aten overload under
``gemsops.use_gems(include=[overload])``.

Every kernel's tuner benchmarks its candidate configs on a cache miss and stores the
winner under ``gemsops.cache_dir()`` (``GEMS_CACHE_DIR``); later processes read it back
and benchmark nothing. Tuning needs a GPU: without one this script says so and exits
with status 2 (``GEMS_VENDOR=interpreter`` runs every call through Triton's interpreter,
which takes each kernel's default config, so it benchmarks nothing).
"""
from __future__ import annotations

import argparse
import ast
import math
import re
import sys
import time
from dataclasses import dataclass

PRESETS = {
    # hidden, intermediate, attention heads, KV heads, vocabulary, head size, q/k/v bias
    "llama-1b": dict(hidden=2048, intermediate=8192, heads=32, kv_heads=8, vocab=32000, head_dim=64, qkv_bias=False),
    "llama3-8b": dict(hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256, head_dim=128,
                      qkv_bias=False),
    "llama3-70b": dict(hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256, head_dim=128,
                       qkv_bias=False),
    "qwen2.5-7b": dict(hidden=3584, intermediate=18944, heads=28, kv_heads=4, vocab=152064, head_dim=128,
                       qkv_bias=True),
    # a toy model for trying the script on a CPU with GEMS_VENDOR=interpreter
    "tiny": dict(hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=256, head_dim=16, qkv_bias=False),
}

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32",
          "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def token_buckets(max_tokens: int) -> list[int]:
    """1, 2, 4, ... up to ``max_tokens`` (included when it is not a power of two)."""
    if max_tokens < 1:
        raise ValueError("--max-tokens must be at least 1")
    out, t = [], 1
    while t < max_tokens:
        out.append(t)
        t *= 2
    out.append(max_tokens)
    return out


# ---------------------------------------------------------------- progress

class Progress:
    """A plain-text progress bar: redrawn in place on a terminal, a line per step otherwise."""

    def __init__(self, total: int, stream=None, width: int = 30):
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_pct = -1

    def render(self, label: str = "") -> str:
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.start:6.1f}s {label}"

    def step(self, label: str = "") -> None:
        self.done += 1
        pct = int(100 * self.done / self.total)
        if self.tty:
            self.stream.write("\r" + self.render(label)[:150].ljust(150))
            if self.done >= self.total:
                self.stream.write("\n")
        elif self.total <= 50 or pct // 5 != self._last_pct // 5 or self.done == self.total:
            self.stream.write(self.render(label) + "\n")
        self._last_pct = pct
        self.stream.flush()


# ---------------------------------------------------------------- record logs

@dataclass(frozen=True)
class TensorSpec:
    dtype: object  # torch.dtype
    shape: tuple


class LogParseError(ValueError):
    pass


_TENSOR = re.compile(r"^([A-Za-z_][\w.]*)\[([\d,\s]*)\]$")
_KWARG = re.compile(r"^([A-Za-z_]\w*)=(.*)$", re.S)


def split_top(text: str) -> list[str]:
    """Split an argument list at the commas that are outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    tail = "".join(cur).strip()
    if tail or parts:
        parts.append(tail)
    return [p for p in parts if p != ""]


def parse_value(tok: str):
    """One logged argument: a TensorSpec, a list of them, or a Python value."""
    import torch
    from gemsops.runtime.oplog import dtype_from_name

    tok = tok.strip()
    m = _TENSOR.match(tok)
    if m:
        try:
            dtype = dtype_from_name(m.group(1))
        except AttributeError:
            dtype = None
        if isinstance(dtype, torch.dtype):
            dims = tuple(int(d) for d in m.group(2).replace(" ", "").split(",") if d)
            return TensorSpec(dtype, dims)
    if tok.startswith("(") and tok.endswith(")"):
        inner = [parse_value(p) for p in split_top(tok[1:-1])]
        if inner and all(isinstance(v, TensorSpec) for v in inner):
            return inner  # a Tensor[] argument (cat, stack)
        return tuple(inner)
    if tok.startswith("torch."):
        value = getattr(torch, tok[len("torch."):], None)
        if value is None:
            raise LogParseError(f"unknown torch attribute {tok!r}")
        return value
    if tok.startswith("device("):
        return "device"  # replaced by the vendor's device when inputs are built
    try:
        return ast.literal_eval(tok)
    except (ValueError, SyntaxError) as err:
        raise LogParseError(f"cannot read argument {tok!r}") from err


def parse_call(args_text: str) -> tuple[list, dict]:
    """(positional, keyword) argument specs of one log line's argument text."""
    args, kwargs = [], {}
    for part in split_top(args_text):
        m = _KWARG.match(part)
        if m and not part.startswith(("'", '"')):
            kwargs[m.group(1)] = parse_value(m.group(2))
        else:
            if kwargs:
                raise LogParseError("positional argument after a keyword argument")
            args.append(parse_value(part))
    return args, kwargs


def read_log_calls(path) -> tuple[list[tuple[str, list, dict]], int]:
    """Unique (overload, args, kwargs) calls of a record log, and the number of unreadable lines."""
    from gemsops.runtime.oplog import read_log

    seen, calls, bad = set(), [], 0
    for _, overload, text in read_log(path):
        key = (overload, text)
        if key in seen:
            continue
        seen.add(key)
        try:
            args, kwargs = parse_call(text)
        except LogParseError:
            bad += 1
            continue
        calls.append((overload.removeprefix("aten::"), args, kwargs))
    return calls, bad


def _index_bound(specs) -> int:
    """Upper bound for random integer inputs: the smallest dim of the floating tensors.

    Index-like integer arguments (embedding ids, index_select/gather indices, class
    targets) are valid for every dim of the tensor they index when below this bound.
    """
    dims = [d for s in specs if isinstance(s, TensorSpec) and s.dtype.is_floating_point for d in s.shape if d > 0]
    return max(1, min(dims)) if dims else 2


def materialize(value, device, bound: int):
    """Random tensors for the specs in ``value`` (other values pass through)."""
    import torch

    if isinstance(value, TensorSpec):
        if value.dtype.is_floating_point:
            return torch.randn(value.shape, device=device, dtype=value.dtype)
        if value.dtype == torch.bool:
            return torch.rand(value.shape, device=device) > 0.5
        return torch.randint(0, bound, value.shape, device=device, dtype=value.dtype)
    if isinstance(value, list) and value and all(isinstance(v, TensorSpec) for v in value):
        return [materialize(v, device, bound) for v in value]
    if isinstance(value, tuple):
        return tuple(materialize(v, device, bound) for v in value)
    if value == "device":
        return torch.device(device)
    return value


def _flat_specs(args, kwargs):
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, TensorSpec):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from (x for x in v if isinstance(x, TensorSpec))


def log_items(path, device):
    """(label, call) for every unique gems call in a record log; also the skipped counts."""
    from gemsops.runtime import registry

    calls, bad = read_log_calls(path)
    decls = registry.declarations()
    items, not_gems = [], 0
    for overload, args, kwargs in calls:
        if overload not in decls:
            not_gems += 1
            continue

        def call(overload=overload, args=args, kwargs=kwargs):
            import gemsops

            bound = _index_bound(_flat_specs(args, kwargs))
            a = [materialize(v, device, bound) for v in args]
            k = {key: materialize(v, device, bound) for key, v in kwargs.items()}
            with gemsops.use_gems(include=[overload]):
                registry.aten_overload(overload)(*a, **k)

        label = f"{overload}({', '.join(_spec_text(v) for v in args)})"
        items.append((label, call))
    return items, {"unreadable lines": bad, "not gems ops": not_gems}


def _spec_text(v) -> str:
    if isinstance(v, TensorSpec):
        return f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}"
    if isinstance(v, list):
        return "[" + ", ".join(_spec_text(x) for x in v) + "]"
    return repr(v)


# ---------------------------------------------------------------- model presets

def preset_items(model: dict, tokens: list[int], dtypes: list, device: str):
    """(label, call) for every op of one decoder layer, per token count and dtype."""
    import torch
    import torch.nn.functional as F

    import gemsops

    h, inter, nh, nkv, vocab, hd = (model[k] for k in ("hidden", "intermediate", "heads", "kv_heads", "vocab",
                                                       "head_dim"))
    weights: dict = {}

    def w(name, shape, dtype):
        key = (name, dtype)
        if key not in weights:
            weights[key] = torch.empty(shape, device=device, dtype=dtype).normal_(0.0, shape[-1] ** -0.5)
        return weights[key]

    def randn(*shape, dtype):
        return torch.randn(shape, device=device, dtype=dtype)

    projections = [("q", nh * hd, h), ("k", nkv * hd, h), ("v", nkv * hd, h), ("qkv", (nh + 2 * nkv) * hd, h),
                   ("o", h, nh * hd), ("gate/up", inter, h), ("gate_up", 2 * inter, h), ("down", h, inter),
                   ("lm_head", vocab, h)]
    items = []
    for dtype in dtypes:
        dn = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(str(dtype).removeprefix("torch."), dtype)
        for t in tokens:
            def embedding(t=t, dtype=dtype):
                F.embedding(torch.randint(0, vocab, (t,), device=device), w("embed", (vocab, h), dtype))

            def rms_norm(t=t, dtype=dtype):
                F.rms_norm(randn(t, h, dtype=dtype), (h,), w("norm", (h,), dtype), 1e-6)

            def residual(t=t, dtype=dtype):
                torch.add(randn(t, h, dtype=dtype), randn(t, h, dtype=dtype))

            def mlp_act(t=t, dtype=dtype):
                F.silu(randn(t, inter, dtype=dtype)) * randn(t, inter, dtype=dtype)

            def sampling(t=t, dtype=dtype):
                torch.softmax(randn(min(t, 256), vocab, dtype=dtype).float(), dim=-1)

            aten = [("embedding", embedding), ("rms_norm", rms_norm), ("add", residual), ("silu*mul", mlp_act),
                    ("softmax", sampling)]
            for name, n_out, k_in in projections:
                def linear(t=t, dtype=dtype, name=name, n_out=n_out, k_in=k_in):
                    bias = None
                    if model.get("qkv_bias") and name in ("q", "k", "v", "qkv"):
                        bias = w(name + ".bias", (n_out,), dtype)
                    F.linear(randn(t, k_in, dtype=dtype), w(name, (n_out, k_in), dtype), bias)

                aten.append((f"linear {name}", linear))
            if t >= 16:
                def attention(t=t, dtype=dtype):
                    q = randn(1, nh, t, hd, dtype=dtype)
                    k, v = randn(1, nkv, t, hd, dtype=dtype), randn(1, nkv, t, hd, dtype=dtype)
                    F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=nh != nkv)

                aten.append(("causal attention", attention))

                def masked_attention(t=t, dtype=dtype):
                    # a padded batch's float mask, as Hugging Face passes it: masked calls tune apart
                    q = randn(1, nh, t, hd, dtype=dtype)
                    k, v = randn(1, nkv, t, hd, dtype=dtype), randn(1, nkv, t, hd, dtype=dtype)
                    mask = torch.zeros(1, 1, t, t, dtype=dtype, device=device)
                    mask[..., : t // 4] = float("-inf")
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=nh != nkv)

                aten.append(("masked attention", masked_attention))
            # these run while main() holds gemsops.enable(), so every gems op they reach is tuned
            items += [(f"{name} {dn} T={t}", fn) for name, fn in aten]
            # fused gemsops.ops functions, where this checkout has them
            ops = gemsops.ops
            if hasattr(ops, "fused_add_rms_norm"):
                items.append((f"fused_add_rms_norm {dn} T={t}", lambda t=t, dtype=dtype: ops.fused_add_rms_norm(
                    randn(t, h, dtype=dtype), randn(t, h, dtype=dtype), w("norm", (h,), dtype), 1e-6)))
            if hasattr(ops, "silu_and_mul"):
                items.append((f"silu_and_mul {dn} T={t}",
                              lambda t=t, dtype=dtype: ops.silu_and_mul(randn(t, 2 * inter, dtype=dtype))))
            if hasattr(ops, "rotary_embedding"):
                def rope(t=t, dtype=dtype):
                    max_pos = max(4096, t)
                    cache = randn(max_pos, hd, dtype=dtype)
                    pos = torch.randint(0, max_pos, (t,), device=device)
                    ops.rotary_embedding(pos, randn(t, nh * hd, dtype=dtype), randn(t, nkv * hd, dtype=dtype), hd,
                                         cache, True)

                items.append((f"rotary_embedding {dn} T={t}", rope))
    return items


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Fill gemsops' persistent tuning cache for a model's shapes.")
    p.add_argument("--model", choices=sorted(PRESETS), help="model preset")
    p.add_argument("--from-log", metavar="FILE", help="shapes from a gemsops record log")
    p.add_argument("--max-tokens", type=int, default=4096, help="largest token count (default 4096)")
    p.add_argument("--dtype", default="bf16", help="comma-separated: bf16, fp16, fp32 (default bf16)")
    args = p.parse_args(argv)
    if not args.model and not args.from_log:
        p.error("give --model and/or --from-log")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import gemsops
    except Exception as err:  # noqa: BLE001  (e.g. GEMS_VENDOR=nvidia on a machine without a GPU)
        print(f"pretune: tuning needs a GPU; gemsops could not start here: {err}", file=sys.stderr)
        return 2
    if gemsops.VENDOR is None:
        print("pretune: tuning needs a GPU, and none is visible (GEMS_VENDOR=interpreter runs the calls "
              "through Triton's interpreter but benchmarks nothing)", file=sys.stderr)
        return 2
    import torch

    from gemsops.runtime import tuner

    device = gemsops.VENDOR.device_type
    try:
        dtypes = [getattr(torch, DTYPES[d.strip().lower()]) for d in args.dtype.split(",") if d.strip()]
    except KeyError as err:
        print(f"pretune: unknown dtype {err}; use bf16, fp16 or fp32", file=sys.stderr)
        return 2
    items, skipped = [], {}
    if args.model:
        items += preset_items(PRESETS[args.model], token_buckets(args.max_tokens), dtypes, device)
    if args.from_log:
        try:
            log_calls, skipped = log_items(args.from_log, device)
        except OSError as err:
            print(f"pretune: cannot read {args.from_log}: {err.strerror}", file=sys.stderr)
            return 2
        items += log_calls
    if gemsops.VENDOR.interpreter:
        print("pretune: interpreter vendor: calls run through Triton's interpreter with default configs; "
              "nothing is benchmarked", file=sys.stderr)
    before = tuner.stats.benchmarks_run
    failures = []
    progress = Progress(len(items))
    t0 = time.perf_counter()
    gemsops.enable()  # log items narrow this to their own overload with use_gems
    try:
        _run_items(items, progress, failures, device)
    finally:
        gemsops.disable()
    if device == "cuda":
        torch.cuda.synchronize()
    ran = tuner.stats.benchmarks_run - before
    print(f"pretune: {len(items) - len(failures)} of {len(items)} calls ran in {time.perf_counter() - t0:.1f}s; "
          f"{ran} configs benchmarked; tuning cache: {gemsops.cache_dir()}")
    for what, n in skipped.items():
        if n:
            print(f"pretune: {n} log entries skipped ({what})")
    if failures:
        print(f"pretune: {len(failures)} calls failed:")
        for line in failures[:20]:
            print(f"  {line}")
    return 0 if not items or len(failures) < len(items) else 1


def _run_items(items, progress, failures, device) -> None:
    import torch

    with torch.no_grad():
        for label, call in items:
            try:
                call()
            except Exception as err:  # noqa: BLE001  (one bad shape must not stop the rest)
                failures.append(f"{label}: {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}")
                if device == "cuda" and isinstance(err, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
            progress.step(label)


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end: a Llama-style decoder with random weights, native eager against ``gemsops.enable()``.

The model is plain ``torch.nn`` (no downloads): embedding, RMSNorm (``F.rms_norm``),
attention with rotary embeddings and grouped KV heads over a static KV cache, SwiGLU MLP,
LM head. Default sizes are those of a ~1B-parameter model (hidden 2048, 16 layers, 32
heads / 8 KV heads, MLP 8192, vocab 32000), bf16.

Measured: prefill tokens/s (one forward over the prompt, causal SDPA), decode ms/token
(greedy, one token per step, attention over the static cache with a mask so shapes never
change), the same decode step replayed as a CUDA graph where capture works, and the top
ops by device time from ``torch.profiler``.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import harness


@dataclass
class LlamaConfig:
    vocab: int = 32000
    hidden: int = 2048
    layers: int = 16
    heads: int = 32
    kv_heads: int = 8
    intermediate: int = 8192
    eps: float = 1e-5
    rope_theta: float = 500000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def params(self) -> int:
        h, d = self.hidden, self.head_dim
        attn = h * self.heads * d * 2 + h * self.kv_heads * d * 2
        mlp = 3 * h * self.intermediate
        return self.layers * (attn + mlp + 2 * h) + 2 * self.vocab * h + h


class Layer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        h, d = cfg.hidden, cfg.head_dim
        self.cfg = cfg
        self.ln1 = nn.Parameter(torch.ones(h))
        self.ln2 = nn.Parameter(torch.ones(h))
        self.wq = nn.Linear(h, cfg.heads * d, bias=False)
        self.wk = nn.Linear(h, cfg.kv_heads * d, bias=False)
        self.wv = nn.Linear(h, cfg.kv_heads * d, bias=False)
        self.wo = nn.Linear(cfg.heads * d, h, bias=False)
        self.gate = nn.Linear(h, cfg.intermediate, bias=False)
        self.up = nn.Linear(h, cfg.intermediate, bias=False)
        self.down = nn.Linear(cfg.intermediate, h, bias=False)

    def forward(self, x, cos, sin, pos, k_cache, v_cache, mask):
        cfg = self.cfg
        b, s, _ = x.shape
        d = cfg.head_dim
        h = F.rms_norm(x, (cfg.hidden,), self.ln1, cfg.eps)
        q = self.wq(h).view(b, s, cfg.heads, d).transpose(1, 2)
        k = self.wk(h).view(b, s, cfg.kv_heads, d).transpose(1, 2)
        v = self.wv(h).view(b, s, cfg.kv_heads, d).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k_cache.index_copy_(2, pos, k)
        v_cache.index_copy_(2, pos, v)
        if mask is None:  # prefill from position 0: causal attention over the new tokens
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            # decode: the query heads of one KV group act as rows of one attention problem,
            # so no KV expansion and a plain masked SDPA over the whole static cache
            g = cfg.heads // cfg.kv_heads
            a = F.scaled_dot_product_attention(q.reshape(b, cfg.kv_heads, g, d), k_cache, v_cache, attn_mask=mask)
            a = a.view(b, cfg.heads, 1, d)
        x = x + self.wo(a.transpose(1, 2).reshape(b, s, cfg.heads * d))
        h = F.rms_norm(x, (cfg.hidden,), self.ln2, cfg.eps)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig, max_len: int):
        super().__init__()
        self.cfg = cfg
        self.max_len = max_len
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.norm = nn.Parameter(torch.ones(cfg.hidden))
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        d = cfg.head_dim
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("positions", torch.arange(max_len), persistent=False)

    def init_random(self, seed: int = 0):
        """Random weights scaled so activations stay O(1) through the layers."""
        with torch.no_grad():
            for n, (name, p) in enumerate(self.named_parameters()):
                if p.dim() == 1:
                    p.fill_(1.0)
                else:
                    g = torch.Generator(device=p.device).manual_seed(seed * 1000 + n)
                    std = 1.0 if name.startswith("embed") else p.shape[1] ** -0.5
                    p.normal_(0.0, std, generator=g)
        return self

    def new_cache(self, batch: int):
        cfg = self.cfg
        shape = (batch, cfg.kv_heads, self.max_len, cfg.head_dim)
        dev, dt = self.embed.weight.device, self.embed.weight.dtype
        return [torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.layers)], \
            [torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.layers)]

    def forward(self, tokens, pos, caches, decode: bool):
        """Logits of the last position. ``pos``: int64 positions of ``tokens`` (a tensor)."""
        x = self.embed(tokens)
        dt = x.dtype
        cos = self.cos.index_select(0, pos).to(dt)[None, None]
        sin = self.sin.index_select(0, pos).to(dt)[None, None]
        mask = (self.positions <= pos[-1])[None, None, None, :] if decode else None
        kc, vc = caches
        for layer, k_cache, v_cache in zip(self.layers, kc, vc):
            x = layer(x, cos, sin, pos, k_cache, v_cache, mask)
        x = F.rms_norm(x[:, -1:], (self.cfg.hidden,), self.norm, self.cfg.eps)
        return self.lm_head(x)[:, -1]


def _cuda_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


class Session:
    """Prefill and greedy decode over one static cache."""

    def __init__(self, model: Llama, batch: int, prompt: int):
        self.model = model
        self.batch = batch
        self.prompt = prompt
        dev = model.embed.weight.device
        g = torch.Generator(device="cpu").manual_seed(1)
        self.tokens = torch.randint(0, model.cfg.vocab, (batch, prompt), generator=g).to(dev)
        self.caches = model.new_cache(batch)
        self.prefill_pos = torch.arange(prompt, device=dev)
        self.step_tok = torch.zeros((batch, 1), dtype=torch.long, device=dev)
        self.step_pos = torch.zeros(1, dtype=torch.long, device=dev)

    def prefill(self):
        return self.model(self.tokens, self.prefill_pos, self.caches, decode=False)

    def start_decode(self, logits):
        self.step_tok.copy_(logits.argmax(-1, keepdim=True))
        self.step_pos.fill_(self.prompt)

    def decode_step(self):
        logits = self.model(self.step_tok, self.step_pos, self.caches, decode=True)
        self.step_tok.copy_(logits.argmax(-1, keepdim=True))
        self.step_pos.add_(1)
        return logits


def measure(model: Llama, batch: int, prompt: int, steps: int, reps: int, graphs: bool, profile: bool,
            log=print) -> dict:
    """Prefill/decode timings (and profile) of ``model`` as it is dispatched right now."""
    out: dict = {}
    s = Session(model, batch, prompt)
    t0 = time.perf_counter()
    logits = s.prefill()
    torch.cuda.synchronize()
    out["first_prefill_s"] = time.perf_counter() - t0
    out["prefill_logits"] = logits.float()
    ms = _cuda_ms(s.prefill, reps)
    out["prefill_ms"] = ms
    out["prefill_tok_s"] = batch * prompt / (ms * 1e-3)

    def decode_run():
        s.start_decode(s.prefill())
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            s.decode_step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / steps

    s.start_decode(s.prefill())
    for _ in range(3):  # compile and tune outside the timed loop
        s.decode_step()
    out["decode_ms"] = statistics.median(decode_run() for _ in range(max(1, reps // 2)))
    s.start_decode(s.prefill())
    first = s.decode_step()
    out["first_decode_logits"] = first.float()
    out["decode_tokens"] = [first.argmax(-1).tolist()] + [s.decode_step().argmax(-1).tolist() for _ in range(3)]
    if graphs:
        try:
            out["graph_decode_ms"] = _graph_decode(s, steps)
        except Exception as err:  # noqa: BLE001
            msg = f"{type(err).__name__}: {err}".replace("\n", " ")[:160]
            out["graph_decode_ms"] = f"failed: {msg}"
            log(f"  CUDA graph capture failed: {msg}")
            torch.cuda.synchronize()
    if profile:
        try:
            out["profile_top"] = _profile(s, min(steps, 8))
        except Exception as err:  # noqa: BLE001
            out["profile_error"] = f"{type(err).__name__}: {err}".replace("\n", " ")[:160]
    return out


def _graph_decode(s: Session, steps: int) -> float:
    s.start_decode(s.prefill())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            s.decode_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    s.start_decode(s.prefill())
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        s.decode_step()
    s.start_decode(s.prefill())
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / steps


def _profile(s: Session, steps: int, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    s.start_decode(s.prefill())
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        s.start_decode(s.prefill())
        for _ in range(steps):
            s.decode_step()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        # self time: a kernel counts for the innermost op that launched it (gems' too)
        dev_us = _attr(ev, "self_device_time_total", "self_cuda_time_total")
        if not ev.key.startswith("aten::") or dev_us <= 0:
            continue
        rows.append({"name": ev.key, "calls": ev.count, "device_ms": dev_us / 1e3,
                     "cpu_ms": _attr(ev, "self_cpu_time_total") / 1e3})
    rows.sort(key=lambda r: -r["device_ms"])
    return rows[:top]


def _attr(ev, *names) -> float:
    for n in names:
        v = getattr(ev, n, None)
        if isinstance(v, (int, float)):
            return float(v)
    return 0.0


def run(quick: bool = False, cfg: LlamaConfig | None = None, batch: int = 1, prompt: int | None = None,
        steps: int | None = None, log=print) -> dict:
    """Native eager against ``gemsops.enable()`` on the same model, cache and prompt."""
    import gemsops
    from gemsops.runtime import registry

    cfg = cfg or LlamaConfig()
    prompt = prompt or (512 if quick else 2048)
    steps = steps or (32 if quick else 128)
    reps = 5 if quick else 10
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Llama(cfg, max_len=prompt + 2 * steps + 16)
    model = model.init_random().to(torch.bfloat16).eval()
    res = {"model": f"Llama-style {cfg.params() / 1e9:.2f}B params, {asdict(cfg)}, batch {batch}, prompt {prompt}, "
                    f"{steps} decode steps, bf16", "config": asdict(cfg), "batch": batch, "prompt": prompt,
           "steps": steps}
    with torch.inference_mode():
        log("  e2e: native eager")
        native = measure(model, batch, prompt, steps, reps, graphs=True, profile=True, log=log)
        log("  e2e: gemsops.enable()")
        gemsops.enable()
        try:
            gems = measure(model, batch, prompt, steps, reps, graphs=True, profile=True, log=log)
        except Exception as err:  # noqa: BLE001  (report native numbers and the failure)
            gems = {"error": f"{type(err).__name__}: {err}".replace("\n", " ")[:200]}
            log(f"  e2e under gemsops.enable() failed: {gems['error']}")
        finally:
            gemsops.disable()
        # every overload enable() routes to gems, each behind a Python kernel that only calls
        # torch's: the cost torch.library's Python dispatch alone puts on this model
        log("  e2e: torch's kernels behind Python forwarding")
        try:
            with harness.python_forwarding(sorted(registry.declarations())):
                forwarding = measure(model, batch, prompt, steps, reps, graphs=False, profile=False, log=log)
            for key in ("prefill_logits", "first_decode_logits"):
                forwarding.pop(key)
        except Exception as err:  # noqa: BLE001
            forwarding = {"error": f"{type(err).__name__}: {err}".replace("\n", " ")[:200]}
            log(f"  e2e with Python forwarding failed: {forwarding['error']}")
    a, b = native.pop("prefill_logits"), gems.pop("prefill_logits", None)
    da, db = native.pop("first_decode_logits"), gems.pop("first_decode_logits", None)
    if b is not None:
        top2 = da.topk(2, -1).values
        res["agreement"] = {
            "prefill logits max abs diff": f"{(a - b).abs().max().item():.3g}",
            "logits scale": f"{a.abs().max().item():.3g}",
            "next-token argmax equal": bool(torch.equal(a.argmax(-1), b.argmax(-1))),
            "first decode tokens equal": native["decode_tokens"] == gems["decode_tokens"],
            # a greedy token can flip where the top two logits are closer than the numerics differ
            "first decode step logits max abs diff": f"{(da - db).abs().max().item():.3g}",
            "first decode step top-2 margin (native)": f"{(top2[..., 0] - top2[..., 1]).min().item():.3g}",
        }
    res["native"], res["gems"], res["forwarding"] = native, gems, forwarding

    def ratio(key, inverse=False):
        x, y = native.get(key), gems.get(key)
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or not x or not y:
            return None
        return y / x if inverse else x / y

    res["speedup"] = {"prefill": ratio("prefill_ms"), "decode": ratio("decode_ms"),
                      "graph decode": ratio("graph_decode_ms")}
    fx = {k: forwarding.get(k) for k in ("prefill_ms", "decode_ms")}
    res["forwarding_speedup"] = {
        k.removesuffix("_ms"): native[k] / v for k, v in fx.items()
        if isinstance(v, (int, float)) and v and isinstance(native.get(k), (int, float))}
    return res

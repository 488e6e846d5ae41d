"""Report writer: Markdown tables, JSON and a PNG plot (matplotlib optional).

Speedup "x native" is native time / gems time (above 1: gems is faster); "x FG" and
"x Liger" compare gems with the peer the same way. Geometric means are taken per
category over the cases where both sides ran; a FlagGems measurement where its
``enable()`` did not replace the op's kernel (``served`` false) is shown with ``*`` and
left out of the FlagGems means.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .cases import CATEGORIES

PEER_LABELS = {"flaggems": "FG", "liger": "Liger"}


def geomean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _ms(result: dict, impl: str) -> float | None:
    entry = result.get("impls", {}).get(impl) or {}
    ms = entry.get("ms")
    return ms if isinstance(ms, (int, float)) and ms > 0 else None


def _peer_counts(result: dict, peer: str) -> bool:
    entry = result.get("impls", {}).get(peer) or {}
    return entry.get("served", True) is not False


def speedups(result: dict) -> dict:
    """{"native": x, "flaggems": x, "liger": x, "flaggems_vs_native": x, ...} for one case."""
    out = {}
    gems = _ms(result, "gems")
    native = _ms(result, "native")
    if gems and native:
        out["native"] = native / gems
    for peer in PEER_LABELS:
        pm = _ms(result, peer)
        if pm and gems and _peer_counts(result, peer):
            out[peer] = pm / gems
        if pm and native and _peer_counts(result, peer):
            out[f"{peer}_vs_native"] = native / pm
    return out


def throughput(result: dict, impl: str = "gems") -> dict:
    """GB/s and TFLOP/s of one implementation of a case."""
    ms = _ms(result, impl)
    if not ms:
        return {}
    out = {}
    if result.get("bytes"):
        out["gbps"] = result["bytes"] / (ms * 1e-3) / 1e9
    if result.get("flops"):
        out["tflops"] = result["flops"] / (ms * 1e-3) / 1e12
    return out


def roofline(result: dict, ceilings: dict | None, impl: str = "gems") -> tuple[float, str] | None:
    """(% of the binding ceiling, "bw" or "mm") for one implementation."""
    if not ceilings:
        return None
    tp = throughput(result, impl)
    best = None
    if "gbps" in tp and ceilings.get("copy_gbps"):
        best = (100 * tp["gbps"] / ceilings["copy_gbps"], "bw")
    if "tflops" in tp and ceilings.get("mm_tflops"):
        pct = 100 * tp["tflops"] / ceilings["mm_tflops"]
        if best is None or pct > best[0]:
            best = (pct, "mm")
    return best


def summarize(results: list[dict]) -> dict:
    """Per-category (and overall) geometric means, worst cases, mismatches and gaps."""
    cats: dict = {}
    order = list(CATEGORIES) + ["all"]
    for r in results:
        sp = speedups(r)
        for cat in (r.get("category", "other"), "all"):
            c = cats.setdefault(cat, {"native": [], "flaggems": [], "liger": [], "flaggems_vs_native": [],
                                      "liger_vs_native": [], "worst": None, "cases": 0})
            c["cases"] += 1
            for key in ("native", "flaggems", "liger", "flaggems_vs_native", "liger_vs_native"):
                if key in sp:
                    c[key].append(sp[key])
            if "native" in sp and (c["worst"] is None or sp["native"] < c["worst"][0]):
                c["worst"] = (sp["native"], r["id"])
    summary = {}
    for cat in sorted(cats, key=lambda k: order.index(k) if k in order else len(order)):
        c = cats[cat]
        summary[cat] = {
            "cases": c["cases"],
            **{f"{key}_geomean": geomean(c[key]) for key in ("native", "flaggems", "liger",
                                                              "flaggems_vs_native", "liger_vs_native")},
            **{f"{key}_n": len(c[key]) for key in ("native", "flaggems", "liger")},
            "worst_vs_native": c["worst"][0] if c["worst"] else None,
            "worst_case": c["worst"][1] if c["worst"] else None,
        }
    return summary


def problems(results: list[dict]) -> dict:
    """Cases whose outputs disagreed with native, implementations that failed, and gaps."""
    mism, errors, missing = [], [], {}
    for r in results:
        if r.get("error"):
            errors.append(f"{r['id']}: {r['error']}")
        for impl, entry in r.get("impls", {}).items():
            if str(entry.get("check", "ok")).startswith("MISMATCH"):
                mism.append(f"{r['id']} [{impl}] {entry['check']}")
            if entry.get("error"):
                errors.append(f"{r['id']} [{impl}] {entry['error']}")
            if entry.get("na") and impl == "gems":
                missing.setdefault(r["op"], entry["na"])
    return {"mismatches": mism, "errors": errors, "not_available": missing}


# ---------------------------------------------------------------- Markdown

def _fmt_us(ms) -> str:
    if ms is None:
        return "-"
    us = ms * 1e3
    return f"{us:.0f}" if us >= 100 else f"{us:.1f}" if us >= 10 else f"{us:.2f}"


def _fmt_x(x) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def _cell(result: dict, impl: str) -> str:
    entry = result.get("impls", {}).get(impl)
    if entry is None:
        return "-"
    if entry.get("na"):
        return "n/a"
    if entry.get("error"):
        return "err"
    text = _fmt_us(entry.get("ms"))
    if entry.get("served") is False:
        text += "*"
    if str(entry.get("check", "ok")).startswith("MISMATCH"):
        text += "!"
    return text


def ops_table(results: list[dict], ceilings: dict | None, peers=("flaggems", "liger")) -> str:
    """One row per case: latencies (us), speedups of gems, throughput and % of ceiling."""
    head = ["op", "shape", "dt", "native", "gems", "x nat"]
    for p in peers:
        head += [PEER_LABELS[p], f"x {PEER_LABELS[p]}"]
    head += ["gems GB/s (TF)", "% ceil"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        sp = speedups(r)
        row = [r["op"], r["shape"], r["dtype"], _cell(r, "native"), _cell(r, "gems"), _fmt_x(sp.get("native"))]
        for p in peers:
            row += [_cell(r, p), _fmt_x(sp.get(p))]
        tp = throughput(r)
        if "tflops" in tp:
            perf = f"{tp['tflops']:.0f} TF"
        elif "gbps" in tp:
            perf = f"{tp['gbps']:.0f}"
        else:
            perf = "-"
        roof = roofline(r, ceilings)
        row += [perf, f"{roof[0]:.0f}{'' if roof[1] == 'bw' else ' mm'}" if roof else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary_md(summary: dict, ceilings: dict | None, meta: dict | None = None) -> str:
    out = []
    if meta:
        out.append("**" + ", ".join(f"{k} {v}" for k, v in meta.items() if v is not None) + "**")
        out.append("")
    if ceilings:
        out.append(f"Ceilings measured in this run: copy {ceilings['copy_gbps']:.0f} GB/s (1 GiB, read+write), "
                   f"cuBLAS bf16 mm {ceilings['mm_tflops']:.0f} TFLOP/s (8192^3).")
        out.append("")
    out.append("| category | cases | gems x native | worst x native | gems x FG (n) | gems x Liger (n) "
               "| FG x native | Liger x native |")
    out.append("|---|---|---|---|---|---|---|---|")
    for cat, s in summary.items():
        worst = "-" if s["worst_vs_native"] is None else f"{_fmt_x(s['worst_vs_native'])} ({s['worst_case']})"
        out.append(
            f"| {cat} | {s['cases']} | {_fmt_x(s['native_geomean'])} | {worst} | "
            f"{_fmt_x(s['flaggems_geomean'])} ({s['flaggems_n']}) | {_fmt_x(s['liger_geomean'])} ({s['liger_n']}) | "
            f"{_fmt_x(s['flaggems_vs_native_geomean'])} | {_fmt_x(s['liger_vs_native_geomean'])} |")
    return "\n".join(out)


def problems_md(probs: dict) -> str:
    out = []
    if probs["not_available"]:
        out.append("Not available in this checkout: " + ", ".join(sorted(probs["not_available"])))
    for key, title in (("mismatches", "Output mismatches (gems or peer vs native)"), ("errors", "Errors")):
        if probs[key]:
            out.append(f"{title}:")
            out += [f"- {line}" for line in probs[key][:30]]
            if len(probs[key]) > 30:
                out.append(f"- ... {len(probs[key]) - 30} more (see results.json)")
    return "\n".join(out)


def host_table(rows: list[dict]) -> str:
    # gems / native: the median of per-repetition ratios (the two loops alternate) where measured
    # forwarding: torch's kernel behind a Python kernel that only calls it (torch.library's floor)
    head = ("| op | native us/call | gems us/call | gems / native | forwarding us/call | forwarding / native "
            "| gems enable() us/call | FG enable() us/call |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(k):
            v = r.get(k)
            return "-" if v is None else (f"{v:.1f}" if isinstance(v, (int, float)) else str(v))

        ratio = r.get("gems_over_native")
        if ratio is None and isinstance(r.get("gems_us"), (int, float)) and r.get("native_us"):
            ratio = r["gems_us"] / r["native_us"]
        fwd = r.get("forward_over_native")
        lines.append(f"| {r['op']} | {f('native_us')} | {f('gems_us')} | {_fmt_x(ratio)} | {f('forward_us')} | "
                     f"{_fmt_x(fwd)} | {f('gems_enable_us')} | {f('flaggems_us')} |")
    return "\n".join(lines)


def e2e_md(e2e: dict) -> str:
    out = [f"Model: {e2e.get('model')}", ""]
    out.append("| mode | prefill tok/s | prefill ms | decode ms/token | CUDA-graph decode ms/token |")
    out.append("|---|---|---|---|---|")
    labels = {"forwarding": "torch's kernels via Python forwarding"}
    for mode in ("native", "gems", "forwarding"):
        m = e2e.get(mode) or {}
        if not m:
            continue

        def f(k, fmt="{:.2f}"):
            v = m.get(k)
            return fmt.format(v) if isinstance(v, (int, float)) else (str(v) if v is not None else "-")

        if m.get("error"):
            out.append(f"| {labels.get(mode, mode)} | failed: {m['error']} | | | |")
            continue
        out.append(f"| {labels.get(mode, mode)} | {f('prefill_tok_s', '{:.0f}')} | {f('prefill_ms')} | {f('decode_ms')} | "
                   f"{f('graph_decode_ms')} |")
    if e2e.get("speedup"):
        out.append("")
        out.append("gems / native speedup: " + ", ".join(f"{k} {v:.2f}x" for k, v in e2e["speedup"].items()
                                                       if v is not None))
    if e2e.get("forwarding_speedup"):
        out.append("Floor set by torch.library alone (every op enable() routes, torch's own kernel behind a "
                   "Python kernel that only calls it) / native: "
                   + ", ".join(f"{k} {v:.2f}x" for k, v in e2e["forwarding_speedup"].items()))
    if e2e.get("agreement"):
        out.append("Agreement with native: " + ", ".join(f"{k} {v}" for k, v in e2e["agreement"].items()))
    for mode in ("native", "gems"):
        top = (e2e.get(mode) or {}).get("profile_top")
        if top:
            out.append("")
            out.append(f"Top ops by device time ({mode}, one prefill + decode steps):")
            out.append("| op | calls | self device ms | self cpu ms |")
            out.append("|---|---|---|---|")
            for row in top:
                out.append(f"| {row['name'][:60]} | {row['calls']} | {row['device_ms']:.2f} | {row['cpu_ms']:.2f} |")
    return "\n".join(out)


# ---------------------------------------------------------------- files

def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)


def op_speedups(results: list[dict]) -> dict:
    """op -> {"gems": geomean x native, "flaggems": ..., "liger": ...} (peers against native)."""
    per: dict = {}
    for r in results:
        sp = speedups(r)
        d = per.setdefault(r["op"], {"gems": [], "flaggems": [], "liger": []})
        if "native" in sp:
            d["gems"].append(sp["native"])
        for p in ("flaggems", "liger"):
            if f"{p}_vs_native" in sp:
                d[p].append(sp[f"{p}_vs_native"])
    return {op: {k: geomean(v) for k, v in d.items()} for op, d in per.items()}


def write_plot(path: Path, results: list[dict], title: str = "") -> bool:
    """Bar chart of speedup over native per op (log scale); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return False
    per = op_speedups(results)
    ops = [op for op, d in per.items() if any(v for v in d.values())]
    if not ops:
        return False
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(ops) + 2), 5))
    width = 0.27
    for k, (key, label) in enumerate((("gems", "gemsops"), ("flaggems", "FlagGems"), ("liger", "Liger"))):
        xs = [n + (k - 1) * width for n in range(len(ops))]
        ys = [per[op][key] or 0 for op in ops]
        if any(ys):
            ax.bar(xs, [y if y else float("nan") for y in ys], width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(ops, rotation=60, ha="right")
    ax.set_ylabel("speedup over PyTorch native (geomean over shapes)")
    ax.set_title(title or "speedup per op")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True

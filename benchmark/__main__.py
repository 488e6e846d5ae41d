"""``python -m benchmark``: gemsops against PyTorch native, FlagGems and Liger-Kernel.

    PYTHONPATH=src python -m benchmark --ops all --quick          # op suite (5-6 min on a fresh H100 with peers)
    PYTHONPATH=src python -m benchmark --ops norm,mm --enable     # global gemsops.enable()
    PYTHONPATH=src python -m benchmark --host-overhead            # per-call cost on tiny tensors
    PYTHONPATH=src python -m benchmark --e2e --quick              # Llama-style model, prefill/decode

Writes ``results.json``, ``results.md`` and ``speedup.png`` under ``--out`` (default
``bench_out/``) and prints the Markdown op table last.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from . import cases as case_mod


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--ops", default=None,
                   help="comma-separated ops or categories, or 'all' (default: all, unless only "
                        "--host-overhead/--e2e is asked for)")
    p.add_argument("--quick", action="store_true", help="fewer shapes and shorter timing")
    p.add_argument("--enable", action="store_true",
                   help="measure gemsops through global gemsops.enable() instead of use_gems(include=...)")
    p.add_argument("--host-overhead", action="store_true", help="per-call wall time of tiny ops")
    p.add_argument("--e2e", action="store_true", help="end-to-end Llama-style model")
    p.add_argument("--out", default="bench_out", help="output folder (default bench_out/)")
    p.add_argument("--no-peers", action="store_true", help="skip FlagGems and Liger-Kernel even if importable")
    p.add_argument("--no-check", action="store_true", help="skip the output check against native")
    p.add_argument("--serial-peer-compile", action="store_true",
                   help="let FlagGems' autotuner compile its candidates one by one, as it ships (slower first "
                        "calls; by default the harness compiles them in parallel first)")
    p.add_argument("--list", action="store_true", help="list the cases and exit (no GPU needed)")
    p.add_argument("--warmup", type=float, default=None, help="do_bench warmup in ms")
    p.add_argument("--rep", type=float, default=None, help="do_bench repetition time in ms")
    p.add_argument("--time-limit", type=float, default=0,
                   help="stop starting new op cases after this many seconds (0: no limit)")
    p.add_argument("--e2e-batch", type=int, default=1)
    p.add_argument("--e2e-prompt", type=int, default=None, help="prompt tokens (default 512 quick, 2048 full)")
    p.add_argument("--e2e-steps", type=int, default=None, help="decode steps (default 32 quick, 128 full)")
    p.add_argument("--e2e-layers", type=int, default=None, help="decoder layers (default 16)")
    args = p.parse_args(argv)
    if args.ops is None and not (args.host_overhead or args.e2e):
        args.ops = "all"
    return args


def _meta(args, runner=None) -> dict:
    import torch
    import triton

    import gemsops

    meta = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "gemsops": gemsops.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "gems path": "gemsops.enable()" if args.enable else "use_gems(include=...)",
    }
    if runner is not None:
        for name, ver in runner.peer_versions().items():
            meta[name] = ver or "not installed"
    return meta


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        selected = case_mod.select(case_mod.all_cases(args.quick), args.ops or "all")
        for c in selected:
            print(f"{c.category:10s} {c.id}")
        print(f"{len(selected)} cases")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("benchmark: needs a CUDA GPU (none is visible)", file=sys.stderr)
        return 2
    import gemsops
    from gemsops.runtime import tuner

    from . import harness, report

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    timing = harness.QUICK if args.quick else harness.FULL
    if args.warmup is not None:
        timing.warmup_ms = args.warmup
    if args.rep is not None:
        timing.rep_ms = args.rep
    payload: dict = {}
    printed: list[str] = []
    t_start = time.perf_counter()
    runner = None
    results: list[dict] = []

    if args.ops:
        selected = case_mod.select(case_mod.all_cases(args.quick), args.ops)
        peers = () if args.no_peers else harness.PEERS
        runner = harness.Runner(timing, enable=args.enable, peers=peers, check=not args.no_check,
                                parallel_peer_compile=not args.serial_peer_compile)
        payload["meta"] = _meta(args, runner)
        if runner.fg is not None:
            payload["meta"]["flaggems autotuner compile"] = runner.peer_compile
        print("measuring ceilings ...", flush=True)
        ceilings = harness.measure_ceilings(timing)
        payload["ceilings"] = ceilings
        print(f"  copy {ceilings['copy_gbps']:.0f} GB/s, mm bf16 {ceilings['mm_tflops']:.0f} TFLOP/s", flush=True)
        skipped = 0
        for n, case in enumerate(selected, 1):
            if args.time_limit and time.perf_counter() - t_start > args.time_limit:
                skipped = len(selected) - n + 1
                print(f"time limit reached: {skipped} cases not run", flush=True)
                break
            r = runner.run(case)
            results.append(r)
            print(f"[{n}/{len(selected)}] {_progress_line(r)}", flush=True)
            if n % 10 == 0:
                payload["results"] = results
                report.write_json(out_dir / "results.json", payload)
        payload["results"] = results
        payload["skipped_cases"] = skipped
        payload["summary"] = report.summarize(results)
        payload["problems"] = report.problems(results)
    else:
        payload["meta"] = _meta(args)

    if args.host_overhead:
        print("host overhead ...", flush=True)
        from . import host_overhead

        payload["host_overhead"] = host_overhead.run(quick=args.quick, with_flaggems=not args.no_peers)
    if args.e2e:
        from . import e2e

        print("end to end ...", flush=True)
        cfg = e2e.LlamaConfig()
        if args.e2e_layers:
            cfg.layers = args.e2e_layers
        payload["e2e"] = e2e.run(quick=args.quick, cfg=cfg, batch=args.e2e_batch, prompt=args.e2e_prompt,
                                 steps=args.e2e_steps)

    payload["meta"]["tuner"] = {"benchmarks_run": tuner.stats.benchmarks_run, "disk_hits": tuner.stats.disk_hits,
                                "cache_dir": str(gemsops.cache_dir())}
    payload["meta"]["seconds"] = round(time.perf_counter() - t_start, 1)
    report.write_json(out_dir / "results.json", payload)

    meta_line = {k: v for k, v in payload["meta"].items() if k not in ("tuner",)}
    md = ["# gemsops benchmark"]
    if results:
        printed.append(report.summary_md(payload["summary"], payload.get("ceilings"), meta_line))
        probs = report.problems_md(payload["problems"])
        if probs:
            printed.append(probs)
    else:
        printed.append("**" + ", ".join(f"{k} {v}" for k, v in meta_line.items()) + "**")
    t = payload["meta"]["tuner"]
    printed.append(f"Tuner: {t['benchmarks_run']} configs benchmarked, {t['disk_hits']} disk-cache hits "
                   f"(cache {t['cache_dir']}).")
    if "host_overhead" in payload:
        printed.append("## Host overhead per call (tiny tensors)\n\n" + report.host_table(payload["host_overhead"]))
    if "e2e" in payload:
        printed.append("## End to end\n\n" + report.e2e_md(payload["e2e"]))
    peers_seen = [p for p in harness.PEERS if any(p in r.get("impls", {}) for r in results)]
    table = report.ops_table(results, payload.get("ceilings"), peers=peers_seen) if results else ""
    legend = ("Latency in us (larger of the do_bench median and the back-to-back per-call time); x = other / gems "
              "(above 1: gems faster); * = FlagGems did not replace this op; ! = output differs from native; "
              "% ceil = share of the measured copy bandwidth (or of cuBLAS mm peak, 'mm').")
    md += printed
    if table:
        md += ["## Ops", legend, table]
    (out_dir / "results.md").write_text("\n\n".join(md) + "\n")
    plotted = results and report.write_plot(out_dir / "speedup.png", results,
                                            f"gemsops on {payload['meta'].get('gpu', '')}")
    print()
    print("\n\n".join(printed))
    files = "results.json, results.md" + (", speedup.png" if plotted else " (no plot: matplotlib missing)")
    print(f"\nWrote {files} under {out_dir}/")
    if table:
        print("\n" + legend + "\n\n" + table)
    return 0


def _progress_line(r: dict) -> str:
    parts = [r["id"]]
    for impl, entry in r.get("impls", {}).items():
        if entry.get("ms"):
            extra = "" if entry.get("check", "ok") == "ok" else f" {entry['check']}"
            parts.append(f"{impl} {entry['ms'] * 1e3:.1f}us{extra}")
        elif entry.get("na"):
            parts.append(f"{impl} not available")
        elif entry.get("error"):
            parts.append(f"{impl} ERROR {entry['error']}")
    if r.get("error"):
        parts.append(f"ERROR {r['error']}")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())

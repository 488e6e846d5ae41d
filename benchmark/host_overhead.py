"""Per-call host cost: wall time per call of ops on tiny tensors in a Python loop.

The GPU work is negligible, so the time is what the dispatcher, the library's host code
and the kernel launch cost. ``torch.cuda.synchronize()`` runs only before and after the
loop, as in a model's forward. gemsops is measured through ``use_gems`` (entered once
around the loop) and through global ``enable()``; FlagGems through its ``enable()``.

Without a GPU, ``GEMS_VENDOR=interpreter python -m benchmark.host_overhead --skip-launches``
times the same cases on CPU tensors with gems' kernel launches made no-ops: what remains
is the Python host path (dispatch, checks, plans, allocation), a proxy for host-side work.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from . import harness


def tiny_ops(device="cuda"):
    """(name, op names for use_gems, call, input builder) for each op measured."""
    def t(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, device=device, dtype=dtype)

    return [
        ("add 16", ("add",), lambda i: torch.add(i[0], i[1]), lambda: (t(16), t(16))),
        ("mul 16", ("mul",), lambda i: torch.mul(i[0], i[1]), lambda: (t(16), t(16))),
        ("add scalar 16", ("add",), lambda i: torch.add(i[0], 1.0), lambda: (t(16),)),
        ("silu 16", ("silu",), lambda i: F.silu(i[0]), lambda: (t(16),)),
        ("sum 4x16", ("sum",), lambda i: torch.sum(i[0], -1), lambda: (t(4, 16),)),
        ("amax 4x16", ("amax",), lambda i: torch.amax(i[0], -1), lambda: (t(4, 16),)),
        ("softmax 4x16", ("softmax", "_softmax"), lambda i: torch.softmax(i[0], -1), lambda: (t(4, 16),)),
        ("rms_norm 4x16", ("rms_norm", "_fused_rms_norm"), lambda i: F.rms_norm(i[0], (16,), i[1], 1e-6),
         lambda: (t(4, 16), t(16))),
        ("layer_norm 4x16", ("layer_norm", "native_layer_norm"),
         lambda i: F.layer_norm(i[0], (16,), i[1], i[2], 1e-5), lambda: (t(4, 16), t(16), t(16))),
        ("mm 16x16", ("mm",), lambda i: torch.mm(i[0], i[1]), lambda: (t(16, 16), t(16, 16))),
        ("linear 16x16", ("mm", "addmm", "linear"), lambda i: F.linear(i[0], i[1], i[2]),
         lambda: (t(16, 16), t(16, 16), t(16))),
        ("embedding 4 of 64x16", ("embedding",), lambda i: F.embedding(i[0], i[1]),
         lambda: (torch.randint(0, 64, (4,), device=device), t(64, 16))),
        ("cat 2x16", ("cat",), lambda i: torch.cat([i[0], i[1]]), lambda: (t(16), t(16))),
        # what Llama-style layers also send: rotate_half's halves of transposed heads, an
        # in-place add, a dtype cast
        ("cat rotary halves", ("cat",), lambda i: torch.cat((i[0][..., 8:], i[0][..., :8]), -1),
         lambda: (t(1, 4, 2, 16).transpose(1, 2),)),
        ("add_ 16 (in place)", ("add",), lambda i: i[0].add_(i[1]), lambda: (t(16), t(16))),
        # a Llama-style layer's prefill attention (GQA, causal): a dozen arguments to plan
        ("sdpa causal 32/8 heads 128x64", ("sdpa",),
         lambda i: F.scaled_dot_product_attention(i[0], i[1], i[2], is_causal=True, enable_gqa=True),
         lambda: (t(1, 128, 32, 64).transpose(1, 2), t(1, 128, 8, 64).transpose(1, 2),
                  t(1, 128, 8, 64).transpose(1, 2))),
        ("to fp32 16", ("_to_copy",), lambda i: i[0].to(torch.float32), lambda: (t(16),)),
    ]


def _loop_us(fn, inp, n: int, device: str) -> float:
    with harness.gc_paused():  # as in the suite's timing loops
        harness.sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn(inp)
        harness.sync(device)
        return (time.perf_counter() - t0) / n * 1e6


def per_call_us(fn, inp, n: int, reps: int = 5, device: str = "cuda") -> float:
    """Median over ``reps`` of the wall time per call of ``n`` calls in a loop."""
    for _ in range(min(n, 10)):
        fn(inp)
    return statistics.median(_loop_us(fn, inp, n, device) for _ in range(reps))


def interleaved_us(fn, inp, n: int, reps: int, device: str, contexts: dict) -> tuple[dict, float]:
    """Per-call time of ``fn`` under each of ``contexts`` (name -> context factory), taken in turn.

    Every repetition times one loop under each context, so a change in the machine's speed
    during the run (clocks, other tenants of the host) hits all of them alike. Returns the
    median per context and the median of the per-repetition ratios of the second context's
    time to the first's.
    """
    samples: dict = {key: [] for key in contexts}
    for make in contexts.values():
        with make():
            for _ in range(min(n, 10)):
                fn(inp)
    for _ in range(reps):
        for key, make in contexts.items():
            with make():
                samples[key].append(_loop_us(fn, inp, n, device))
    first, second = list(samples.values())[:2]
    ratio = statistics.median(b / a for a, b in zip(first, second))
    return {key: statistics.median(v) for key, v in samples.items()}, ratio


@contextlib.contextmanager
def launches_skipped():
    """gems' kernel launches (each passes ``Bound.__call__``, ``Prepared.__call__`` or
    ``Prepared.planned``) do nothing inside this block."""
    from gemsops.runtime import launch

    saved = launch.Bound.__call__, launch.Prepared.__call__, launch.Prepared.planned
    launch.Bound.__call__ = lambda bound, grid, *args: None
    launch.Prepared.__call__ = launch.Prepared.planned = lambda prepared, *args: None
    try:
        yield
    finally:
        launch.Bound.__call__, launch.Prepared.__call__, launch.Prepared.planned = saved


def run(quick: bool = False, with_flaggems: bool = True, log=print, device: str = "cuda", calls: int | None = None,
        reps: int = 5, ops=None, skip_launches: bool = False) -> list[dict]:
    """One row per tiny op: us per call native, through use_gems, through enable(), FlagGems,
    and torch's own kernels behind a forwarding Python kernel (``harness.python_forwarding``).

    ``skip_launches``: gems' launches are no-ops while gems is timed (outputs are garbage).
    """
    import gemsops

    n = calls or (300 if quick else 2000)
    fg = harness.load_flaggems() if with_flaggems else None
    rows = []
    with torch.no_grad():
        for name, names, fn, make in tiny_ops(device):
            if ops is not None and name not in ops:
                continue
            inp = make()
            row = {"op": name, "calls": n}
            include = harness.gems_include(names, harness.detect_overloads(fn, inp))
            skipping = launches_skipped if skip_launches else contextlib.nullcontext
            if not include:
                row["native_us"] = per_call_us(fn, inp, n, reps, device)
                row["gems_us"] = row["gems_enable_us"] = "n/a"
            else:
                row["include"] = include

                @contextlib.contextmanager
                def gems_scope():
                    with gemsops.use_gems(include=include), skipping():
                        yield

                # native, use_gems and torch's kernels behind Python forwarding in turn (gems /
                # native is the number that matters; forwarding / native is torch.library's floor)
                try:
                    times, ratio = interleaved_us(fn, inp, n, reps, device, {
                        "native_us": contextlib.nullcontext, "gems_us": gems_scope,
                        "forward_us": lambda: harness.python_forwarding(include)})
                    row.update(times)
                    row["gems_over_native"] = ratio
                    row["forward_over_native"] = times["forward_us"] / times["native_us"]
                except Exception as err:  # noqa: BLE001
                    row["native_us"] = per_call_us(fn, inp, n, reps, device)
                    row["gems_us"] = "err"
                    row["gems_us_error"] = harness._short(err)
                try:
                    with harness._gems_enabled(), skipping():
                        row["gems_enable_us"] = per_call_us(fn, inp, n, reps, device)
                except Exception as err:  # noqa: BLE001
                    row["gems_enable_us"] = "err"
                    row["gems_enable_us_error"] = harness._short(err)
            if fg is not None:
                try:
                    with harness.flaggems_enabled(fg):
                        row["flaggems_us"] = per_call_us(fn, inp, n, reps, device)
                except Exception as err:  # noqa: BLE001
                    row["flaggems_us"] = "err"
                    row["flaggems_error"] = harness._short(err)
            log(f"  host {name}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in row.items() if k.endswith("_us")))
            rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-launches", action="store_true", help="gems' launches become no-ops (Python path only)")
    p.add_argument("--calls", type=int, default=400, help="calls per timed loop")
    p.add_argument("--reps", type=int, default=9, help="timed loops per case (the median is kept)")
    args = p.parse_args(argv)
    import gemsops

    run(device=gemsops.VENDOR.device_type, calls=args.calls, reps=args.reps, with_flaggems=False,
        skip_launches=args.skip_launches)


if __name__ == "__main__":
    main()

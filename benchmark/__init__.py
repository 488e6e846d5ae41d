"""gemsops benchmark suite: ``python -m benchmark --ops all --quick`` (run from the repo root).

Modules: ``cases`` (op cases and model shapes), ``harness`` (timing, peers, one case),
``host_overhead`` (per-call cost on tiny tensors), ``e2e`` (Llama-style model), ``report``
(Markdown, JSON, plot).
"""

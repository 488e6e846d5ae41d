"""Report writer: speedups, geometric means, tables, JSON and the optional plot."""
import json
import math

import pytest

from benchmark import report


def _result(op, cat, native, gems, fg=None, liger=None, served=True, check="ok", bytes_=1e9, flops=0, shape="s"):
    impls = {"native": {"ms": native}}
    impls["gems"] = {"ms": gems, "check": check} if gems else {"na": f"{op} missing"}
    if fg:
        impls["flaggems"] = {"ms": fg, "served": served, "check": "ok"}
    if liger:
        impls["liger"] = {"ms": liger, "check": "ok"}
    return {"id": f"{op}/{shape}/bf16", "op": op, "category": cat, "shape": shape, "dtype": "bf16",
            "bytes": bytes_, "flops": flops, "impls": impls}


RESULTS = [
    _result("add", "pointwise", 2.0, 1.0, fg=4.0, shape="a"),
    _result("add", "pointwise", 1.0, 2.0, fg=1.0, served=False, shape="b"),
    _result("rms_norm", "norm", 3.0, 1.5, fg=1.5, liger=3.0),
    _result("mm", "matmul", 1.0, 1.0, fg=2.0, bytes_=1e6, flops=1e12),
    _result("silu_and_mul", "fused", 1.0, None),
    _result("softmax", "softmax", 1.0, 1.0, check="MISMATCH 0.5"),
]
CEIL = {"copy_gbps": 2000.0, "mm_tflops": 1000.0}


def test_geomean():
    assert report.geomean([2, 8]) == pytest.approx(4)
    assert report.geomean([]) is None
    assert report.geomean([None, 0, float("nan"), 4]) == pytest.approx(4)


def test_speedups_and_unserved_peer():
    assert report.speedups(RESULTS[0]) == {"native": 2.0, "flaggems": 4.0, "flaggems_vs_native": 0.5}
    sp = report.speedups(RESULTS[1])  # FlagGems did not replace the op: no comparison with it
    assert sp == {"native": 0.5}
    assert report.speedups(RESULTS[4]) == {}


def test_throughput_and_roofline():
    tp = report.throughput(RESULTS[0])  # 1e9 bytes in 1 ms
    assert tp["gbps"] == pytest.approx(1000)
    assert report.roofline(RESULTS[0], CEIL) == (pytest.approx(50.0), "bw")
    # mm: 1e12 flop in 1 ms = 1000 TFLOP/s = 100% of the mm ceiling, above its bandwidth share
    assert report.roofline(RESULTS[3], CEIL) == (pytest.approx(100.0), "mm")
    assert report.roofline(RESULTS[0], None) is None


def test_summarize_per_category_and_overall():
    s = report.summarize(RESULTS)
    assert list(s)[:2] == ["pointwise", "softmax"] and list(s)[-1] == "all"
    pw = s["pointwise"]
    assert pw["cases"] == 2 and pw["native_geomean"] == pytest.approx(1.0)  # sqrt(2 * 0.5)
    assert pw["worst_vs_native"] == pytest.approx(0.5) and pw["worst_case"] == "add/b/bf16"
    assert pw["flaggems_geomean"] == pytest.approx(4.0) and pw["flaggems_n"] == 1
    assert s["norm"]["liger_geomean"] == pytest.approx(2.0)
    assert s["all"]["cases"] == len(RESULTS)
    assert s["fused"]["native_geomean"] is None


def test_problems_lists_mismatches_errors_and_gaps():
    rs = RESULTS + [{"id": "x/y/bf16", "op": "x", "category": "pointwise", "error": "inputs: out of memory",
                     "impls": {"liger": {"error": "RuntimeError: boom"}}}]
    p = report.problems(rs)
    assert p["mismatches"] == ["softmax/s/bf16 [gems] MISMATCH 0.5"]
    assert len(p["errors"]) == 2 and p["not_available"] == {"silu_and_mul": "silu_and_mul missing"}
    text = report.problems_md(p)
    assert "silu_and_mul" in text and "boom" in text


def _rows(table):
    return [line for line in table.splitlines() if line.startswith("|")]


def test_ops_table_is_well_formed():
    table = report.ops_table(RESULTS, CEIL)
    rows = _rows(table)
    assert len(rows) == 2 + len(RESULTS)
    widths = {line.count("|") for line in rows}
    assert len(widths) == 1  # no cell breaks the columns
    assert "n/a" in rows[2 + 4] and "!" in rows[2 + 5] and "*" in rows[3]
    assert "1000 TF" in rows[2 + 3]


def test_summary_host_and_e2e_markdown():
    md = report.summary_md(report.summarize(RESULTS), CEIL, {"gpu": "H100", "torch": "2.11"})
    assert "copy 2000 GB/s" in md and "gpu H100" in md
    assert len({line.count("|") for line in _rows(md)}) == 1
    host = report.host_table([{"op": "add 16", "native_us": 4.0, "gems_us": 6.0, "gems_enable_us": 5.0,
                               "forward_us": 5.5, "forward_over_native": 1.375},
                              {"op": "mul 16", "native_us": 4.0, "gems_us": "n/a"}])
    assert "| add 16 | 4.0 | 6.0 | 1.50 | 5.5 | 1.38 | 5.0 |" in host and "n/a" in host
    assert len({line.count("|") for line in host.splitlines()}) == 1
    e2e = {"model": "tiny", "native": {"prefill_tok_s": 1000.0, "prefill_ms": 1.0, "decode_ms": 2.0,
                                       "graph_decode_ms": 1.0,
                                       "profile_top": [{"name": "aten::mm", "calls": 3, "device_ms": 1.0,
                                                        "cpu_ms": 0.5}]},
           "gems": {"prefill_tok_s": 2000.0, "prefill_ms": 0.5, "decode_ms": 1.0, "graph_decode_ms": "failed: x"},
           "forwarding": {"prefill_tok_s": 800.0, "prefill_ms": 1.25, "decode_ms": 4.0},
           "speedup": {"prefill": 2.0, "decode": 2.0, "graph decode": None}, "agreement": {"argmax equal": True},
           "forwarding_speedup": {"prefill": 0.8, "decode": 0.5}}
    text = report.e2e_md(e2e)
    assert "| gems | 2000 | 0.50 | 1.00 | failed: x |" in text and "aten::mm" in text and "prefill 2.00x" in text
    assert "| torch's kernels via Python forwarding | 800 | 1.25 | 4.00 | - |" in text
    assert "Python kernel that only calls it) / native: prefill 0.80x, decode 0.50x" in text


def test_json_roundtrip(tmp_path):
    path = tmp_path / "sub" / "results.json"
    report.write_json(path, {"results": RESULTS, "x": math.pi})
    assert json.loads(path.read_text())["results"][0]["id"] == "add/a/bf16"


def test_op_speedups_and_plot(tmp_path):
    per = report.op_speedups(RESULTS)
    assert per["add"]["gems"] == pytest.approx(1.0) and per["mm"]["flaggems"] == pytest.approx(0.5)
    try:
        import matplotlib  # noqa: F401
        have = True
    except ImportError:
        have = False
    assert report.write_plot(tmp_path / "p.png", RESULTS) is have
    assert (tmp_path / "p.png").exists() is have

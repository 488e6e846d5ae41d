"""examples/pretune.py: presets, token buckets, record-log parsing and the no-GPU paths."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import gemsops
from gemsops.runtime.oplog import OpRecorder

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("pretune", ROOT / "examples" / "pretune.py")
pretune = importlib.util.module_from_spec(spec)
sys.modules["pretune"] = pretune  # dataclasses look their module up there
spec.loader.exec_module(pretune)
TS = pretune.TensorSpec


def test_token_buckets():
    assert pretune.token_buckets(1) == [1]
    assert pretune.token_buckets(8) == [1, 2, 4, 8]
    assert pretune.token_buckets(12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError):
        pretune.token_buckets(0)


def test_presets_have_model_facts():
    for name in ("llama3-8b", "llama3-70b", "qwen2.5-7b", "llama-1b"):
        p = pretune.PRESETS[name]
        assert p["heads"] % p["kv_heads"] == 0 and p["hidden"] >= 2048 and p["vocab"] >= 32000
    assert pretune.PRESETS["llama3-8b"]["intermediate"] == 14336


def test_split_top_respects_brackets_and_quotes():
    assert pretune.split_top("bf16[4, 8], (f32[2], f32[3]), [1, 2], 'a, b', x=1") == \
        ["bf16[4, 8]", "(f32[2], f32[3])", "[1, 2]", "'a, b'", "x=1"]
    assert pretune.split_top("") == []


def test_parse_values_written_by_describe():
    assert pretune.parse_value("bf16[4, 8]") == TS(torch.bfloat16, (4, 8))
    assert pretune.parse_value("f32[]") == TS(torch.float32, ())
    assert pretune.parse_value("torch.complex64[2]") == TS(torch.complex64, (2,))
    assert pretune.parse_value("(f16[2, 3], f16[5, 3])") == [TS(torch.float16, (2, 3)), TS(torch.float16, (5, 3))]
    assert pretune.parse_value("[4096]") == [4096]
    assert pretune.parse_value("1e-06") == 1e-06 and pretune.parse_value("None") is None
    assert pretune.parse_value("torch.bfloat16") is torch.bfloat16
    assert pretune.parse_value("'tanh'") == "tanh"
    assert pretune.parse_value("device(type='cuda', index=0)") == "device"
    with pytest.raises(pretune.LogParseError):
        pretune.parse_value("<object at 0x1>")
    args, kwargs = pretune.parse_call("bf16[2, 4], bf16[2, 4], alpha=2")
    assert args == [TS(torch.bfloat16, (2, 4))] * 2 and kwargs == {"alpha": 2}
    with pytest.raises(pretune.LogParseError):
        pretune.parse_call("alpha=2, bf16[2]")


def test_log_written_by_the_recorder_reads_back(tmp_path):
    path = tmp_path / "log.txt"
    rec = OpRecorder(path)
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    rec.log("add.Tensor", (x, x), {"alpha": 2})
    rec.log("add.Tensor", (x, x), {"alpha": 2})  # duplicate: tuned once
    rec.log("cat", ([x, x], 0), {})
    rec.log("rms_norm", (x, [4], None, 1e-6), {})
    rec.close()
    with open(path, "a") as f:
        f.write("garbage line\n0.1\taten::mm\t<object at 0x1>\n")
    calls, bad = pretune.read_log_calls(path)
    assert bad == 1
    assert calls[0] == ("add.Tensor", [TS(torch.bfloat16, (2, 4))] * 2, {"alpha": 2})
    assert calls[1] == ("cat", [[TS(torch.bfloat16, (2, 4))] * 2, 0], {})
    assert calls[2] == ("rms_norm", [TS(torch.bfloat16, (2, 4)), [4], None, 1e-6], {})
    assert len(calls) == 3


def test_materialize_gives_valid_indices():
    specs = [TS(torch.float32, (100, 7)), TS(torch.int64, (50,))]
    bound = pretune._index_bound(specs)
    assert bound == 7
    idx = pretune.materialize(specs[1], "cpu", bound)
    assert idx.dtype == torch.int64 and idx.shape == (50,) and 0 <= idx.min() and idx.max() < 7
    w = pretune.materialize(specs[0], "cpu", bound)
    assert w.shape == (100, 7) and w.dtype == torch.float32
    assert pretune.materialize(TS(torch.bool, (3,)), "cpu", 2).dtype == torch.bool
    assert pretune.materialize("device", "cpu", 2) == torch.device("cpu")
    assert pretune.materialize([4096], "cpu", 2) == [4096]


def test_progress_bar_plain_text():
    import io

    out = io.StringIO()
    bar = pretune.Progress(4, stream=out, width=8)
    for k in range(4):
        bar.step(f"item{k}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("[########] 4/4") and "item3" in lines[-1]


def test_interpreter_run_benchmarks_nothing(tmp_path, monkeypatch, capsys):
    if not gemsops.VENDOR.interpreter:
        pytest.skip("the interpreter path; the GPU path is the lead's GPU run")
    monkeypatch.setenv("GEMS_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "log.txt"
    rec = OpRecorder(log)
    x = torch.randn(2, 4)
    rec.log("add.Tensor", (x, x), {})
    rec.log("no_such_op", (x,), {})
    rec.close()
    assert pretune.main(["--model", "tiny", "--max-tokens", "2", "--from-log", str(log)]) == 0
    out = capsys.readouterr()
    assert "0 configs benchmarked" in out.out and str(tmp_path / "cache") in out.out
    assert "1 log entries skipped (not gems ops)" in out.out
    assert "calls failed" not in out.out
    assert "add.Tensor" in out.err and "nothing is benchmarked" in out.err
    assert gemsops.all_registered_ops() == []


def test_no_vendor_says_tuning_needs_a_gpu_and_exits_nonzero(monkeypatch, capsys):
    # what gemsops selects on a machine with no GPU and GEMS_VENDOR unset
    monkeypatch.setattr(gemsops, "VENDOR", None)
    assert pretune.main(["--model", "tiny"]) == 2
    assert "tuning needs a GPU" in capsys.readouterr().err

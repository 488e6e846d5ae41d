"""``record=True`` logging: format, once, default path, fallbacks, append, summary CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gemsops
from gemsops.runtime.oplog import read_log
from tests.util import randn

ROOT = Path(__file__).resolve().parents[2]


def test_line_format(tmp_path):
    log = tmp_path / "ops.log"
    gemsops.enable(record=True, path=log)
    torch.add(randn(2, 3, dtype=torch.float16), randn(3, dtype=torch.float16))
    gemsops.disable()
    ((seconds, op, args),) = read_log(log)
    assert seconds >= 0 and op == "aten::add.Tensor"
    assert args.startswith("f16[2, 3], f16[3]")


def test_once_logs_each_overload_and_dtypes_once(tmp_path):
    log = tmp_path / "ops.log"
    gemsops.enable(record=True, once=True, path=log)
    for _ in range(3):
        torch.add(randn(4), randn(4))
    torch.add(randn(4, dtype=torch.float16), randn(4, dtype=torch.float16))
    gemsops.disable()
    assert [op for _, op, _ in read_log(log)] == ["aten::add.Tensor"] * 2


def test_default_path_is_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gemsops.enable(record=True)
    torch.add(randn(2), 1.0)
    gemsops.disable()
    assert read_log(tmp_path / "gems_oplog.txt")


def test_missing_directory_is_created_and_file_appended(tmp_path):
    log = tmp_path / "a" / "b" / "ops.log"
    for _ in range(2):
        gemsops.enable(record=True, path=log)
        torch.add(randn(2), randn(2))
        gemsops.disable()
    assert len(read_log(log)) == 2


def test_unwritable_path_falls_back_to_cwd(tmp_path, monkeypatch):
    # a regular file where a directory is expected cannot be written, even by root
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="cannot write the op log"):
        gemsops.enable(record=True, path=blocker / "ops.log")
    torch.add(randn(2), randn(2))
    gemsops.disable()
    assert [op for _, op, _ in read_log(tmp_path / "ops.log")] == ["aten::add.Tensor"]


def test_log_summary_cli(tmp_path):
    log = tmp_path / "ops.log"
    gemsops.enable(record=True, path=log)
    x = randn(3)
    for _ in range(3):
        torch.add(x, x)
    torch.add(x, 2.0)
    gemsops.disable()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-m", "gemsops", "log-summary", str(log)],
                         capture_output=True, text=True, env=env, check=True).stdout
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert counts["aten::add.Tensor"] == "4"  # torch.add(x, 2.0) wraps the scalar: add.Tensor too
    assert counts["total"] == str(len(read_log(log)))


def test_log_summary_missing_file_is_a_clear_error(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-m", "gemsops", "log-summary", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 1 and "cannot read" in res.stderr


"""enable / only_enable / disable / use_gems as a user relies on them.

Which op ran through gems is read from the ``record`` log, the same evidence a user has.
"""
import threading
import warnings

import pytest
import torch

import gemsops
from gemsops.runtime.oplog import read_log
from tests.util import DEVICE, assert_close, randn

ADD_OVERLOADS = {"add.Tensor", "add.Scalar", "add.out", "add_.Tensor", "add_.Scalar"}


def logged_ops(path):
    return [op for _, op, _ in read_log(path)] if path.exists() else []


def test_enable_routes_add_and_disable_restores_dispatch_table():
    before = torch._C._dispatch_dump("aten::add.Tensor")
    gemsops.enable()
    assert ADD_OVERLOADS <= set(gemsops.all_registered_ops())
    a, b = randn(3, 4), randn(4)
    assert_close(torch.add(a, b, alpha=2), a + 2 * b)
    gemsops.disable()
    assert gemsops.all_registered_ops() == []
    assert torch._C._dispatch_dump("aten::add.Tensor") == before


def test_enable_prints_nothing(capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gemsops.enable()
        gemsops.disable()
        gemsops.enable()
    assert caught == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_enable_records_calls(tmp_path):
    log = tmp_path / "ops.log"
    gemsops.enable(record=True, path=log)
    a = randn(2, 3)
    torch.add(a, a)
    a.add_(1.0)
    gemsops.disable()
    ops = logged_ops(log)
    assert ops[0] == "aten::add.Tensor" and ops[1] in ("aten::add_.Tensor", "aten::add_.Scalar")


def test_unused_family_and_exact_overload():
    gemsops.enable(unused=["add"])
    assert not ADD_OVERLOADS & set(gemsops.all_registered_ops())
    gemsops.enable(unused=["add.Tensor"])
    active = set(gemsops.all_registered_ops())
    assert "add.Tensor" not in active and "add.Scalar" in active


def test_unknown_name_warns_with_suggestion_and_changes_nothing_else():
    with pytest.warns(UserWarning, match=r"unknown op name 'ad'.*'add'"):
        gemsops.only_enable(include=["ad", "add.Tensor"])
    assert gemsops.all_registered_ops() == ["add.Tensor"]


def test_later_calls_replace_earlier_ones():
    gemsops.enable()
    gemsops.only_enable(include=["add.Scalar"])
    assert gemsops.all_registered_ops() == ["add.Scalar"]
    gemsops.enable(unused=["add.Scalar"])
    assert "add.Scalar" not in gemsops.all_registered_ops()


def test_use_gems_scopes_and_restores(tmp_path):
    log = tmp_path / "ops.log"
    a = randn(5)
    with gemsops.use_gems(include=["add"], record=True, path=log):
        assert set(gemsops.all_registered_ops()) == ADD_OVERLOADS
        torch.add(a, a)
    assert gemsops.all_registered_ops() == []
    torch.add(a, a)  # after the block: native, not logged
    assert logged_ops(log) == ["aten::add.Tensor"]


def test_use_gems_exclude_inside_enable_runs_native(tmp_path):
    log = tmp_path / "ops.log"
    gemsops.enable(record=True, path=log)
    a = randn(4)
    with gemsops.use_gems(exclude=["add"]):
        assert not ADD_OVERLOADS & set(gemsops.all_registered_ops())
        torch.add(a, a)
    assert "aten::add.Tensor" not in logged_ops(log)
    torch.add(a, a)  # global enable() is back
    assert logged_ops(log).count("aten::add.Tensor") == 1


def test_nesting_innermost_wins_and_exception_restores():
    gemsops.only_enable(include=["add.Scalar"])
    with gemsops.use_gems(include=["add.Tensor"]):
        with pytest.raises(RuntimeError, match="boom"):
            with gemsops.use_gems(exclude=["add.Tensor"]):
                assert "add.Tensor" not in gemsops.all_registered_ops()
                assert "add.Scalar" in gemsops.all_registered_ops()
                raise RuntimeError("boom")
        assert gemsops.all_registered_ops() == ["add.Tensor"]
    assert gemsops.all_registered_ops() == ["add.Scalar"]


def test_include_wins_over_exclude():
    with gemsops.use_gems(include=["add.Tensor"], exclude=["add"]):
        assert gemsops.all_registered_ops() == ["add.Tensor"]


def test_use_gems_is_thread_local(tmp_path):
    log = tmp_path / "ops.log"
    inside, done = threading.Event(), threading.Event()
    other_result = {}

    def other_thread():
        inside.wait()
        x = torch.ones(7, device=DEVICE)
        other_result["ops"] = gemsops.all_registered_ops()
        other_result["value"] = torch.add(x, x)  # must stay native
        done.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with gemsops.use_gems(include=["add"], record=True, path=log):
        inside.set()
        done.wait()
        torch.add(torch.ones(3, device=DEVICE), 1.0)
    t.join()
    assert other_result["ops"] == []
    assert torch.equal(other_result["value"], torch.full((7,), 2.0, device=DEVICE))
    lines = read_log(log)
    assert len(lines) == 1 and "[3]" in lines[0][2] and "[7]" not in lines[0][2]


def test_explicit_call_needs_no_enabling():
    a, b = randn(2, 3), randn(2, 3)
    assert gemsops.all_registered_ops() == []
    assert_close(gemsops.ops.add(a, b), a + b)


def test_unsupported_input_runs_native():
    a = torch.randn(3, dtype=torch.complex64, device=DEVICE)
    gemsops.enable()
    torch.testing.assert_close(torch.add(a, a), a * 2)
    torch.testing.assert_close(gemsops.ops.add(a, a), a * 2)


def test_autograd_still_works_through_gems():
    a = randn(3, requires_grad=True)
    gemsops.enable()
    (a + a).sum().backward()
    assert_close(a.grad, torch.full_like(a, 2.0))


def test_use_gems_applies_to_backward_and_other_threads_backward_stays_native(tmp_path):
    """On CUDA, autograd runs backward in its own device thread: the block still applies
    there. A Python thread running its own backward outside any block stays native."""
    log = tmp_path / "ops.log"
    x = randn(4, 16, requires_grad=True)
    with gemsops.use_gems(include=["softmax"], record=True, path=log):
        y = torch.softmax(x, -1)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y) * torch.arange(16.0, device=DEVICE))
    ops = logged_ops(log)
    assert "aten::_softmax" in ops and "aten::_softmax_backward_data" in ops
    want = torch.autograd.grad(torch.softmax(x, -1), x, torch.ones_like(y) * torch.arange(16.0, device=DEVICE))[0]
    assert_close(gx, want)

    log2 = tmp_path / "ops2.log"
    inside, done = threading.Event(), threading.Event()

    def other_thread():
        inside.wait()
        z = torch.softmax(x, -1)
        torch.autograd.grad(z.sum(), x)
        done.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with gemsops.use_gems(include=["add"], record=True, path=log2):
        inside.set()
        done.wait()
    t.join()
    assert "aten::_softmax_backward_data" not in logged_ops(log2)

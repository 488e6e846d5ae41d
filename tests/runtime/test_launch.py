"""The launch helpers: per-signature plan memos (the lean launcher itself runs in every op test)."""
from gemsops.runtime import Plans, tuner


def test_plans_are_bounded_and_start_over_when_full():
    plans = Plans(limit=2)
    assert plans.keep("a", 1) == 1 and plans.keep("b", 2) == 2
    assert plans.get("a") == 1
    plans.keep("c", 3)  # full: the memo starts over rather than growing with odd signatures
    assert dict(plans) == {"c": 3}


def test_plans_made_under_graph_capture_are_not_kept(monkeypatch):
    # a config chosen under capture is a one-off default, not the tuned choice
    plans = Plans()
    monkeypatch.setattr(tuner, "capturing", lambda: True)
    assert plans.keep("sig", "plan") == "plan"
    assert "sig" not in plans
    monkeypatch.setattr(tuner, "capturing", lambda: False)
    plans.keep("sig", "plan")
    assert plans["sig"] == "plan"


def test_a_launch_hook_sends_launches_back_to_triton():
    # a profiler's launch hook (proton, torch's Triton tracing) must see every launch, so
    # the lean path steps aside while one is installed on either side of the launch
    import pytest
    from gemsops.runtime import launch

    knobs = pytest.importorskip("triton.knobs")
    assert launch._hooks_unset()
    for chain in (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook):
        if not hasattr(chain, "add"):
            pytest.skip("a Triton without hook chains")

        def hook(*args):
            return None

        chain.add(hook)
        try:
            assert not launch._hooks_unset()
        finally:
            chain.remove(hook)
        assert launch._hooks_unset()

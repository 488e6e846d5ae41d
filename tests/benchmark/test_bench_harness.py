"""Harness pieces that need no GPU: output checks, input rotation, overload detection, one
case run end to end on the CPU through the interpreter vendor (tiny shapes)."""
import types

import pytest
import torch

import gemsops
from benchmark import harness
from benchmark.cases import ENABLE, Case
from tests.benchmark.fake_flaggems import FakeFlagGems

DEV = gemsops.VENDOR.device_type


def test_check_outputs_accepts_rounding_and_rejects_wrong_values():
    ref = torch.linspace(-3, 3, 64)
    ok, err = harness.check_outputs(ref, ref * (1 + 1e-4), tol=1e-3)
    assert ok and 0 < err < 1e-3
    ok, err = harness.check_outputs(ref, ref + 0.5, tol=1e-2)
    assert not ok and err > 0.1
    # tuples compare element by element, views by value (layout may differ)
    ok, _ = harness.check_outputs((ref, ref.view(8, 8)), (ref.clone(), ref.view(8, 8).t().contiguous().t()), 1e-6)
    assert ok
    assert not harness.check_outputs(ref, ref[:10], 1e-2)[0]  # size differs
    assert not harness.check_outputs((ref, ref), ref, 1e-2)[0]  # count differs
    nan = ref.clone()
    nan[3] = float("nan")
    assert harness.check_outputs(nan, nan.clone(), 0.0)[0]
    assert not harness.check_outputs(nan, ref, 1.0)[0]
    inf = ref.clone()
    inf[0] = float("inf")
    assert not harness.check_outputs(inf, -inf, 1.0)[0]
    assert not harness.check_outputs(None, None, 1.0)[0]  # nothing to compare is not a pass


def test_num_sets_rotates_small_inputs_past_l2():
    t = harness.Timing()
    l2 = 50 << 20
    assert harness.num_sets(1 << 30, l2, t) == 1  # already far larger than L2
    assert harness.num_sets(40 << 20, l2, t) == 4  # 3 * 50 MiB / 40 MiB, rounded up
    assert harness.num_sets(1024, l2, t) == t.max_sets
    assert harness.num_sets(0, l2, t) == 1
    assert harness.num_sets(1 << 30, l2, harness.Timing(set_budget=1 << 29)) == 1


def test_gc_paused_restores_the_collector_state():
    import gc

    assert gc.isenabled()
    with harness.gc_paused():
        assert not gc.isenabled()
        with harness.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not turn it back on early
    assert gc.isenabled()
    with pytest.raises(ValueError), harness.gc_paused():
        raise ValueError
    assert gc.isenabled()


def test_rotating_cycles_through_sets():
    seen = []
    fn = harness.rotating(seen.append, ["a", "b", "c"])
    for _ in range(7):
        fn()
    assert seen == ["a", "b", "c", "a", "b", "c", "a"]
    single = []
    harness.rotating(single.append, ["x"])()
    assert single == ["x"]


def test_clone_inputs_keeps_layout_and_is_independent():
    base = torch.arange(12.0).view(3, 4)
    inp = {"t": base.t(), "xs": [base, base[:, 1]], "n": 3}
    out = harness.clone_inputs(inp)
    assert out["t"].stride() == inp["t"].stride() and torch.equal(out["t"], inp["t"])
    assert out["n"] == 3 and torch.equal(out["xs"][1], base[:, 1])
    out["xs"][0].add_(1)
    assert torch.equal(base, torch.arange(12.0).view(3, 4))
    assert harness.tensor_bytes(inp) == 12 * 4  # views of one storage count once


def test_detect_overloads_and_gems_include():
    x = torch.randn(4, 8)
    seen = harness.detect_overloads(lambda i: torch.add(i, i) * 2, x)
    assert seen == ["add.Tensor", "mul.Tensor"]
    decls = gemsops.runtime.registry.declarations()
    include = harness.gems_include(("add",), [])
    assert "add.Tensor" in include and set(include) <= set(decls)
    # names gems does not declare contribute nothing, and unknown names do not warn
    assert harness.gems_include(("no_such_op",), ["no_such_op.default"]) == []
    assert harness.gems_include(("add.Tensor",), ["add.Tensor", "empty.memory_format"]) == ["add.Tensor"]
    # an overload reached inside a decomposed composite is not the case's op
    include = harness.gems_include(("rms_norm",), ["pow.Tensor_Scalar", "add.Tensor"])
    assert set(include) == set(gemsops.runtime.registry.families().get("rms_norm", ()))


def _tiny_case(op="add", **kw):
    def make(device):
        return {"x": torch.randn(4, 8, device=device), "y": torch.randn(4, 8, device=device)}

    fn = {"add": torch.add, "mul": torch.mul}[op]
    return Case(op, "4x8", torch.float32, make, lambda i: fn(i["x"], i["y"]), bytes=3 * 32 * 4, gems_aten=(op,),
                **kw)


def test_run_case_through_use_gems_on_the_interpreter():
    runner = harness.Runner(harness.QUICK, peers=(), device=DEV)
    res = runner.run(_tiny_case())
    gems = res["impls"]["gems"]
    assert gems["path"] == "use_gems" and "add.Tensor" in gems["include"]
    assert gems["check"] == "ok"
    for impl in ("native", "gems"):
        e = res["impls"][impl]
        assert e["ms"] > 0 and e["ms"] >= min(e["bench_ms"], e["loop_ms"])
    assert res["aten"] == ["add.Tensor"] and res["sets"] >= 1
    assert res["wall_s"] >= 0  # the case's whole time, for the suite's time budget
    assert runner.peer_compile == "serial"  # no FlagGems loaded: Triton's autotuner untouched
    assert gemsops.all_registered_ops() == []  # the scope closed


def test_run_case_with_enable_and_a_wrong_peer():
    runner = harness.Runner(harness.QUICK, peers=(), device=DEV, enable=True)
    # a fake Liger namespace whose "kernel" is wrong: the check must say so
    runner.liger = types.SimpleNamespace(Bad=lambda x, y: x - y)
    res = runner.run(_tiny_case(liger=lambda L, i: L.Bad(i["x"], i["y"])))
    assert res["impls"]["gems"]["path"] == "gemsops.enable()"
    assert res["impls"]["gems"]["check"] == "ok"
    assert res["impls"]["liger"]["check"].startswith("MISMATCH")
    assert gemsops.all_registered_ops() == []  # enable() was undone


def test_missing_gems_op_is_reported_not_available():
    runner = harness.Runner(harness.QUICK, peers=(), device=DEV)
    res = runner.run(Case("silu_and_mul", "4x8", torch.float32, lambda d: {"x": torch.randn(4, 8, device=d)},
                          lambda i: i["x"] * 2, bytes=1, gems_direct="no_such_fused_op",
                          gems_call=lambda fn, i: fn(i["x"])))
    assert res["impls"]["gems"]["na"].startswith("gemsops.ops.no_such_fused_op")
    assert res["impls"]["native"]["ms"] > 0


def test_a_peer_kernel_registered_but_never_reached_is_not_served():
    # FlagGems registers a CUDA kernel for aten::scaled_dot_product_attention, a composite
    # op that dispatch never sends to a backend kernel: torch's kernels run instead. Here
    # the fake overrides mul.Tensor while the case calls add (both named by the case).
    runner = harness.Runner(harness.QUICK, peers=(), device=DEV)
    runner.fg = FakeFlagGems(True, runner.dispatch_key)
    case = _tiny_case("add", flaggems=ENABLE)
    case.gems_aten = ("add", "mul.Tensor")
    fg = runner.run(case)["impls"]["flaggems"]
    assert fg["served"] is False and fg["check"] == "ok"
    # the GPU's second timing pass enters the peer's scope again: the verdict stays
    with runner._flaggems_ctx(["mul.Tensor"], fg):
        pass
    assert fg["served"] is False


@pytest.mark.parametrize("serve", [True, False])
def test_flaggems_peer_enable_is_scoped_and_served_is_detected(serve):
    runner = harness.Runner(harness.QUICK, peers=(), device=DEV)
    runner.fg = FakeFlagGems(serve, runner.dispatch_key)
    before = harness._kernel_line("mul.Tensor", runner.dispatch_key)
    res = runner.run(_tiny_case("mul", flaggems=ENABLE))
    fg = res["impls"]["flaggems"]
    assert fg["served"] is serve and fg["check"] == "ok" and fg["ms"] > 0
    assert harness._kernel_line("mul.Tensor", runner.dispatch_key) == before  # library destroyed


def test_failing_or_missing_peer_function_is_recorded_and_the_run_goes_on():
    runner = harness.Runner(harness.QUICK, peers=(), device=DEV)

    def boom(x):
        raise RuntimeError("kernel failed")

    runner.liger = types.SimpleNamespace(Boom=boom)
    res = runner.run(_tiny_case(liger=lambda L, i: L.Boom(i["x"])))
    assert res["impls"]["liger"]["error"] == "RuntimeError: kernel failed"
    assert res["impls"]["gems"]["check"] == "ok"
    # a function this peer version does not have: not available, not an error
    res = runner.run(_tiny_case(liger=lambda L, i: L.Missing(i["x"])))
    assert res["impls"]["liger"]["na"].startswith("not in this version")
    assert "error" not in res["impls"]["liger"]


def test_in_place_case_checks_every_implementation_on_the_original_inputs():
    # the timing loop of one implementation runs in place on the timed inputs; a later
    # implementation's output check must still start from the inputs the reference saw
    def make(device):
        return {"x": torch.randn(4, 8, device=device), "r": torch.randn(4, 8, device=device)}

    def add_into(i):
        i["r"].add_(i["x"])
        return i["r"]

    runner = harness.Runner(harness.QUICK, peers=(), device=DEV)
    runner.liger = types.SimpleNamespace(AddInto=add_into)
    case = Case("add", "4x8", torch.float32, make, lambda i: i["x"] + i["r"], bytes=1,
                gems_direct="add", gems_call=lambda fn, i: i["r"].copy_(fn(i["r"], i["x"])),
                liger=lambda L, i: L.AddInto(i))
    res = runner.run(case)
    assert res["impls"]["gems"]["check"] == "ok"
    assert res["impls"]["liger"]["check"] == "ok"


@pytest.mark.parametrize("loops, calls, ms", [
    ([0.5, 9.0, 9.0], 1, 1.0),  # the GPU sets the pace: one loop, do_bench's time stands
    ([1.5, 1.2, 9.0], 3, 1.5),  # host-bound: the median of three loops (one stalled)
])
def test_back_to_back_loops_are_repeated_only_when_the_host_sets_the_pace(monkeypatch, loops, calls, ms):
    seen = []
    monkeypatch.setattr(harness, "do_bench_ms", lambda fn, timing: 1.0)
    monkeypatch.setattr(harness, "loop_ms", lambda fn, n: seen.append(n) or loops[len(seen) - 1])
    got = harness.time_fn(lambda: None, harness.QUICK, device="cuda")
    assert len(seen) == calls and got["bench_ms"] == 1.0 and got["ms"] == ms


def test_second_pass_times_in_reverse_order_and_combines_the_runs():
    # native, gems, ... then ..., gems, native: a GPU that slows as it heats gives every
    # implementation one early and one late slot (device times averaged); a host stall only
    # lengthens a loop (the shorter loop counts)
    import contextlib

    runner = harness.Runner.__new__(harness.Runner)
    runner.device = "cuda"
    order = []
    second = {"gems": (1.2, 0.5), "native": (1.8, 4.0)}  # (do_bench, loop) of the second run

    def measure(call, sets):
        order.append(call)
        bench, loop = second[call]
        return {"ms": max(bench, loop), "bench_ms": bench, "loop_ms": loop}

    runner._measure = measure
    res = {"impls": {"native": {"ms": 2.0, "bench_ms": 2.0, "loop_ms": 0.5, "first_ms": 9.0},
                     "gems": {"ms": 1.0, "bench_ms": 1.0, "loop_ms": 0.5}}}
    timed = [("native", "native", contextlib.nullcontext), ("gems", "gems", contextlib.nullcontext)]
    runner._second_pass(res, timed, sets=None)
    assert order == ["gems", "native"]
    native, gems = res["impls"]["native"], res["impls"]["gems"]
    assert native["bench_ms"] == pytest.approx(1.9) and native["loop_ms"] == 0.5 and native["ms"] == pytest.approx(1.9)
    assert native["ms_runs"] == [2.0, 4.0] and native["first_ms"] == 9.0
    assert gems["ms"] == pytest.approx(1.1)

    def failing(call, sets):
        raise RuntimeError("out of memory")

    runner._measure = failing
    runner._second_pass(res, timed, sets=None)  # a failed second run keeps the first
    assert res["impls"]["gems"]["ms"] == pytest.approx(1.1) and "out of memory" in res["impls"]["gems"]["second_run_error"]


def test_a_stalled_run_is_outvoted_by_a_third():
    # two do_bench times 8x apart: a stall, not drift. A third run is taken and the median
    # counts; runs that agree (within 25%) are averaged as before, with no third run
    import contextlib

    runner = harness.Runner.__new__(harness.Runner)
    runner.device = "cuda"
    later = {"gems": [(0.26, 0.03), (0.031, 0.03)], "native": [(0.030, 0.03)]}  # (do_bench, loop)
    measured = []

    def measure(call, sets):
        measured.append(call)
        bench, loop = later[call].pop(0)
        return {"ms": max(bench, loop), "bench_ms": bench, "loop_ms": loop}

    runner._measure = measure
    res = {"impls": {"native": {"ms": 0.029, "bench_ms": 0.029, "loop_ms": 0.027},
                     "gems": {"ms": 0.029, "bench_ms": 0.029, "loop_ms": 0.028}}}
    timed = [("native", "native", contextlib.nullcontext), ("gems", "gems", contextlib.nullcontext)]
    runner._second_pass(res, timed, sets=None)
    assert measured == ["gems", "gems", "native"]
    gems, native = res["impls"]["gems"], res["impls"]["native"]
    assert gems["bench_ms"] == 0.031 and gems["loop_ms"] == 0.028 and len(gems["ms_runs"]) == 3
    assert native["bench_ms"] == pytest.approx(0.0295) and len(native["ms_runs"]) == 2


def test_python_forwarding_puts_torch_kernels_behind_a_python_kernel(monkeypatch):
    from gemsops.runtime import registry

    calls = []
    native = registry.native("add.Tensor")
    monkeypatch.setitem(registry._NATIVE, "add.Tensor", lambda *a, **k: calls.append(1) or native(*a, **k))
    a, b = torch.randn(5, device=DEV), torch.randn(5, device=DEV)
    expected = a + b
    with harness.python_forwarding(["add.Tensor"]):
        got = torch.add(a, b)
        assert calls == [1] and gemsops.all_registered_ops() == []
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.add(a, b)
    assert calls == [1]  # unregistered on the way out
    with gemsops.use_gems(include=["add"]), pytest.raises(RuntimeError, match="gems kernels are registered"):
        with harness.python_forwarding(["add.Tensor"]):
            pass


def test_python_forwarding_of_every_declared_overload_leaves_a_model_unchanged():
    # the end-to-end mode forwards every overload enable() would route: a decode step of the
    # model must give the same logits through the forwarders as natively
    from benchmark import e2e
    from gemsops.runtime import registry

    cfg = e2e.LlamaConfig(vocab=50, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64)
    torch.manual_seed(0)
    model = e2e.Llama(cfg, max_len=16).init_random().eval()
    tokens = torch.randint(0, cfg.vocab, (1, 6))

    def run():
        with torch.inference_mode():
            caches = model.new_cache(1)
            model(tokens[:, :5], torch.arange(5), caches, decode=False)
            return model(tokens[:, 5:6], torch.tensor([5]), caches, decode=True)

    expected = run()
    with harness.python_forwarding(sorted(registry.declarations())):
        got = run()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

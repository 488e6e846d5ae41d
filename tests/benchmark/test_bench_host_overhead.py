"""Host-overhead mode on the interpreter: rows for native, use_gems and enable()."""
import gemsops
from benchmark import harness, host_overhead


def test_rows_for_a_gems_op_and_for_any_other():
    dev = gemsops.VENDOR.device_type
    lines = []
    rows = host_overhead.run(device=dev, calls=2, reps=1, ops={"add 16", "cat 2x16"}, with_flaggems=False,
                             log=lines.append)
    assert [r["op"] for r in rows] == ["add 16", "cat 2x16"]
    for row, (name, names, fn, make) in zip(rows, [o for o in host_overhead.tiny_ops(dev)
                                                   if o[0] in ("add 16", "cat 2x16")]):
        assert row["native_us"] > 0
        inp = make()
        if harness.gems_include(names, harness.detect_overloads(fn, inp)):
            assert row["gems_us"] > 0 and row["gems_enable_us"] > 0
            assert row["forward_us"] > 0 and row["forward_over_native"] > 0
        else:
            assert row["gems_us"] == "n/a"
    assert rows[0]["gems_us"] > 0  # add exists in every checkout
    assert len(lines) == 2 and gemsops.all_registered_ops() == []


def test_tiny_ops_cover_the_common_families():
    names = {n.split()[0] for n, *_ in host_overhead.tiny_ops("cpu")}
    assert {"add", "mul", "silu", "sum", "softmax", "rms_norm", "layer_norm", "mm", "embedding", "cat"} <= names


def test_skip_launches_times_the_python_path_and_restores_launches():
    from gemsops.runtime import launch

    original = launch.Bound.__call__
    rows = host_overhead.run(device=gemsops.VENDOR.device_type, calls=2, reps=1, ops={"sum 4x16"},
                             with_flaggems=False, log=lambda line: None, skip_launches=True)
    assert rows[0]["gems_us"] > 0 and launch.Bound.__call__ is original
    with host_overhead.launches_skipped():
        assert launch.Bound.__call__ is not original
    assert launch.Bound.__call__ is original


def test_native_and_gems_loops_alternate_and_the_ratio_is_per_repetition():
    # a machine whose speed drifts during the run must not bias gems / native: each
    # repetition times one native loop and one gems loop, and the ratio is taken per pair
    import contextlib

    order = []

    def marker(name):
        @contextlib.contextmanager
        def ctx():
            order.append(name)
            yield
        return ctx

    times, ratio = host_overhead.interleaved_us(lambda inp: None, None, n=3, reps=3, device="cpu",
                                                contexts={"native_us": marker("n"), "gems_us": marker("g")})
    assert order == ["n", "g"] * 4  # one warm-up pass each, then three alternating repetitions
    assert set(times) == {"native_us", "gems_us"} and ratio > 0
    rows = host_overhead.run(device=gemsops.VENDOR.device_type, calls=2, reps=1, ops={"add 16"},
                             with_flaggems=False, log=lambda line: None)
    assert rows[0]["gems_over_native"] > 0

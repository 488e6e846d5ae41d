"""The launch helpers: per-signature plan memos and the lean launch path (with a stand-in kernel on CPU)."""
import pytest
import torch

from gemsops import ops as gems_ops
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


@pytest.fixture
def lean_path(monkeypatch):
    """(calls, bound): a stand-in kernel bound with BLOCK=128, on the lean path as on a GPU."""
    from types import SimpleNamespace

    from gemsops.runtime import launch

    monkeypatch.setattr(launch, "VENDOR", SimpleNamespace(interpreter=False))
    monkeypatch.setattr(launch, "_current_device", lambda: -1)  # the CPU tensors' get_device()
    monkeypatch.setattr(launch, "_current_stream", lambda device: 1234)
    monkeypatch.setattr(launch, "_hooks_unset", lambda: True)
    calls = []
    return calls, launch.Launcher(_fake_kernel(calls)).bind(BLOCK=128)


def _fake_kernel(calls):
    """A stand-in for a JITFunction: records Triton-path launches and compiled-kernel runs."""
    from types import SimpleNamespace

    class Compiled:
        function, packed_metadata = "function", "metadata"

        def run(self, *args):
            calls.append(("run", args))

    def body(x_ptr, n, scale, BLOCK, FLAG=False):
        pass

    class Kernel:
        fn = body
        arg_names = ["x_ptr", "n", "scale", "BLOCK", "FLAG"]
        params = [SimpleNamespace(name=name, is_constexpr=name.isupper()) for name in arg_names]

        def __getitem__(self, grid):
            def launch(*args, **constexprs):
                calls.append(("triton", grid, args, constexprs))
                return Compiled()
            return launch

    return Kernel()


def test_lean_launch_runs_the_compiled_kernel_with_tritons_arguments(lean_path, monkeypatch):
    # On a GPU every op launches through this path; here a stand-in kernel shows what it
    # passes: the first call of each specialization goes through Triton (which compiles),
    # later ones call the compiled kernel with the grid, stream and trailing constexprs
    from gemsops.runtime import launch

    calls, bound = lean_path
    x = torch.zeros(64)
    bound((4,), x, 1024, 0.5)
    bound((4, 2), x, 1024, 0.25)
    assert [c[0] for c in calls] == ["triton", "run"]
    assert calls[0][1:] == ((4,), (x, 1024, 0.5), {"BLOCK": 128})
    # tensors reach the compiled kernel as their addresses (the launcher then skips its own
    # data_ptr() call and driver check per tensor)
    assert calls[1][1] == (4, 2, 1, 1234, "function", "metadata", None, None, None, x.data_ptr(), 1024, 0.25,
                           128, False)
    # what Triton specializes on changes the key: an integer equal to 1, one not a multiple
    # of 16, one past int32, a tensor not 16-byte aligned, another dtype
    for args in [(x, 1, 0.5), (x, 1025, 0.5), (x[1:], 1024, 0.5), (x.double(), 1024, 0.5), (x, 2**31, 0.5)]:
        calls.clear()
        bound((4,), *args)
        bound((4,), *args)
        assert [c[0] for c in calls] == ["triton", "run"], args
    # a launch hook (a profiler) sends every launch back through Triton
    monkeypatch.setattr(launch, "_hooks_unset", lambda: False)
    calls.clear()
    bound((4,), x, 1024, 0.5)
    assert [c[0] for c in calls] == ["triton"]


def test_prepared_launch_passes_the_same_arguments_as_the_plain_one(lean_path, monkeypatch):
    # a plan's launch with its grid and trailing integers fixed (Bound.prepare): it must reach
    # the compiled kernel with exactly what the plain launch passes, and re-specialize on
    # what changes in the per-call head
    from gemsops.runtime import launch

    calls, bound = lean_path
    x = torch.zeros(64)
    bound((4, 2), x, 1024, 0.5)
    bound((4, 2), x, 1024, 0.5)
    plain = calls[-1]
    calls.clear()
    # the tail is (n, scale) here: the prepared head is the tensor alone
    prepared = bound.prepare((4, 2), (1024, 0.5))
    prepared(x)
    prepared(x)
    assert [c[0] for c in calls] == ["run", "run"]  # the Bound had compiled it already
    assert calls[0] == calls[1] == plain
    assert len(prepared.compiled) == 1  # the second call found the kernel under the head's key
    calls.clear()
    shifted = x[1:]
    prepared(shifted)  # an unaligned head tensor: a new specialization, through Triton first
    prepared(shifted)
    assert [c[0] for c in calls] == ["triton", "run"]
    assert calls[0][1:] == ((4, 2), (shifted, 1024, 0.5), {"BLOCK": 128})
    # a tail Triton specializes differently: its own compiled kernel
    calls.clear()
    ones = bound.prepare((8,), (1, 0.5))
    ones(x)
    ones(x)
    assert [c[0] for c in calls] == ["triton", "run"]
    assert calls[1][1] == (8, 1, 1, 1234, "function", "metadata", None, None, None, x.data_ptr(), 1, 0.5, 128, False)
    # a tensor in the fixed tail: Triton gets the tensor, the compiled kernel its address
    calls.clear()
    all_fixed = bound.prepare((2,), (x, 2049, 0.5))
    all_fixed()
    all_fixed()
    assert [c[0] for c in calls] == ["triton", "run"]
    assert calls[0][2][0] is x and calls[1][1][9:12] == (x.data_ptr(), 2049, 0.5)
    # a grid function, or a hook: Triton's path every time
    calls.clear()
    bound.prepare(lambda meta: (4,), (1024, 0.5))(x)
    monkeypatch.setattr(launch, "_hooks_unset", lambda: False)
    prepared(x)
    assert [c[0] for c in calls] == ["triton", "triton"]


def test_a_planned_launch_checks_only_device_and_alignment(lean_path, monkeypatch):
    # Prepared.planned serves callers whose plan key fixes the head's dtypes (the pointwise
    # fast path): after the first launch it passes exactly what the full path passes,
    # follows the current stream, and leaves everything it does not check to the full path
    from gemsops.runtime import launch

    calls, bound = lean_path
    x, y = torch.zeros(64), torch.ones(64)
    full = bound.prepare((4,), (1024, 0.5))
    full(x)
    full(x)
    expected = calls[-1]
    calls.clear()
    planned = bound.prepare((4,), (1024, 0.5))
    planned.planned(x)  # the Bound compiled it already: run, and the direct entry is found
    assert planned.direct is not None
    planned.planned(x)
    planned.planned(y)  # another tensor of the plan's dtype: only its address differs
    assert [c[0] for c in calls] == ["run", "run", "run"]
    assert calls[0] == calls[1] == expected
    assert calls[2][1][9] == y.data_ptr()
    monkeypatch.setattr(launch, "_current_stream", lambda device: 99)  # a torch.cuda.stream block
    planned.planned(x)
    assert calls[-1][1][3] == 99 and calls[-1][1][4:] == expected[1][4:]
    calls.clear()
    planned.planned(x[1:])  # not 16-byte aligned: the full path's own specialization
    planned.planned(x[1:])
    assert [c[0] for c in calls] == ["triton", "run"]
    calls.clear()
    monkeypatch.setattr(launch, "_hooks_unset", lambda: False)  # a profiler's hook: Triton's path
    planned.planned(x)
    assert [c[0] for c in calls] == ["triton"]
    monkeypatch.setattr(launch, "_hooks_unset", lambda: True)
    # an integer in the head specializes on its value: such a launch never takes the direct path
    ints = bound.prepare((4,), (0.5,))
    ints.planned(x, 1024)
    ints.planned(x, 1024)
    assert ints.direct is False
    assert [c[0] for c in calls[-2:]] == ["run", "run"]  # the full path (compiled by the first launches)


def test_a_compiled_launcher_that_refuses_the_arguments_sends_launches_to_triton(lean_path):
    # a Triton whose compiled launcher takes other arguments than the lean path passes
    # raises TypeError there: that launch and every later one take Triton's own path
    calls, bound = lean_path
    x = torch.zeros(64)
    prepared = bound.prepare((4,), (1024, 0.5))
    prepared.planned(x)
    prepared.planned(x)
    entry = bound.compiled[next(iter(bound.compiled))]

    def refuses(*args):
        raise TypeError("launch() takes other arguments")

    prepared.direct[1].entry = (refuses, *entry[1:])
    prepared.direct[1].bound = (None, None)
    calls.clear()
    prepared.planned(x)
    assert [c[0] for c in calls] == ["triton"] and prepared.direct is None
    assert not bound.launcher.fast
    prepared(x)
    assert [c[0] for c in calls] == ["triton", "triton"]


def test_a_known_scratch_forwarding_launcher_is_bypassed(lean_path, monkeypatch):
    # Where the compiled kernel's launcher object is of a form known to only forward to its
    # C launch function (Triton 3.6's CudaLauncher), the lean path calls that function
    # itself, with the arguments the launcher object would have passed; any other form,
    # or a kernel that needs scratch memory, keeps the launcher object's own call.
    import hashlib
    import inspect
    import re

    from gemsops.runtime import launch

    calls, _ = lean_path

    class Forwarding:
        launch_cooperative_grid, launch_pdl = False, True

        def __init__(self, scratch):
            self.global_scratch_size = scratch
            self.profile_scratch_size = 0

        def __call__(self, gridX, gridY, gridZ, stream, function, *args):
            calls.append(("launcher object", args))

        def launch(self, *args):
            calls.append(("C launch", args))

    digest = hashlib.sha256(re.sub(r"\s+", "", inspect.getsource(Forwarding.__call__)).encode()).hexdigest()
    x = torch.zeros(64)

    def run_twice(scratch):
        kernel = _fake_kernel(calls)
        compiled_cls = type(kernel[(1,)]())
        compiled_cls.run = Forwarding(scratch)
        calls.clear()
        bound = launch.Launcher(kernel).bind(BLOCK=128)
        bound((4,), x, 1024, 0.5)
        bound((4,), x, 1024, 0.5)
        return calls[-1]

    unknown = run_twice(0)
    assert unknown == ("launcher object", ("metadata", None, None, None, x.data_ptr(), 1024, 0.5, 128, False))
    monkeypatch.setattr(launch, "_SCRATCH_FORWARDING_CALLS", frozenset({digest}))
    monkeypatch.setattr(launch, "_FORWARDING", {})
    assert run_twice(0) == ("C launch", (4, 1, 1, 1234, "function", False, True, None, None, "metadata", None,
                                         None, None, x.data_ptr(), 1024, 0.5, 128, False))
    assert run_twice(256)[0] == "launcher object"  # scratch to allocate: the object does that


def test_triton_3_6_launches_skip_the_launcher_object():
    # On a GPU with Triton 3.6 (the reference machine's), the known CudaLauncher form is
    # recognised: an op's compiled entries call the C launch function directly. A Triton
    # whose launcher source changed fails here, which is the point: re-measure and add its form.
    import triton

    from tests.util import ON_GPU

    if not ON_GPU or not triton.__version__.startswith("3.6."):
        pytest.skip("checks the CUDA launcher of Triton 3.6")
    import gemsops

    x = torch.randn(1000, device="cuda")
    torch.testing.assert_close(gemsops.ops.add(x, x), x + x)
    torch.testing.assert_close(gemsops.ops.add(x, x), x + x)  # the second call takes the lean path
    from gemsops.ops import _pointwise

    entries = [e for b in _pointwise._launch_flat.bound.values() for e in b.compiled.values()]
    assert entries
    assert all(type(run).__name__ != "CudaLauncher" for run, _, _ in entries), entries


def _descriptor_wrapper(raw, positions, metas, encode):
    """A stand-in for Triton 3.6's ``wrap_handle_tensordesc(...)`` result: same free
    variables, same module globals, same expansion of each descriptor argument."""
    import textwrap

    namespace = {"_BASE_ARGS_FORMAT_LEN": 13, "make_tensordesc_arg": encode}
    exec(textwrap.dedent("""
        def wrap(launcher, tensordesc_indices, tensordesc_meta):
            def inner(*args):
                final_args = list(args[:_BASE_ARGS_FORMAT_LEN])
                tensordesc_idx = 0
                for i, arg in enumerate(args[_BASE_ARGS_FORMAT_LEN:]):
                    if i in tensordesc_indices:
                        final_args.extend(make_tensordesc_arg(arg, tensordesc_meta[tensordesc_idx]))
                        tensordesc_idx += 1
                    else:
                        final_args.append(arg)
                return launcher(*final_args)
            return inner
    """), namespace)
    return namespace["wrap"](raw, set(positions), list(metas))


def test_tensor_descriptor_expansions_are_kept_per_base_shape_and_strides(monkeypatch):
    # Triton 3.6 encodes a CUtensorMap for every descriptor argument at every launch; the
    # lean path keeps each expansion per (base address, shape, strides) and passes the C
    # launch function exactly what Triton's wrapper would have passed
    from types import SimpleNamespace

    from gemsops.runtime import launch

    encoded = []

    def encode(d, meta):
        encoded.append((d.base.data_ptr(), meta))
        return [("map", d.base.data_ptr(), meta), *d.shape, *d.strides]

    received = []
    head = tuple(range(13))  # grid, stream, function, ... as the lean path passes them
    inner = _descriptor_wrapper(lambda *a: received.append(a), [0, 2], ["meta a", "meta b"], encode)
    a, b, c = torch.zeros(64), torch.zeros(64), torch.zeros(64)

    def desc(t, shape=(8, 8), strides=(8, 1)):
        return SimpleNamespace(base=t, shape=list(shape), strides=list(strides), padding="zero")

    assert launch._cached_descriptors(inner) is inner  # an unknown wrapper source: left alone
    monkeypatch.setattr(launch, "_source_digest", lambda fn: "known")
    monkeypatch.setattr(launch, "_DESCRIPTOR_WRAPPERS", frozenset({"known"}))
    monkeypatch.setattr(launch, "_DESCRIPTOR_ENCODERS", frozenset({"known"}))
    cached = launch._cached_descriptors(inner)
    assert cached is not inner
    for da, db in [(desc(a), desc(b)), (desc(a), desc(b)), (desc(a), desc(c)), (desc(a, (4, 16), (16, 1)), desc(c))]:
        cached(*head, da, 7, db, 0.5)
        inner(*head, da, 7, db, 0.5)
        assert received[-2] == received[-1]
    # encodings: the first call, the new base c, the new shape of a; the plain wrapper encodes every time
    assert len(encoded) == 2 + 1 + 1 + 8
    assert ("map", a.data_ptr(), "meta a") in received[-1] and ("map", c.data_ptr(), "meta b") in received[-1]


def test_described_launch_encodes_each_operand_once_per_base(monkeypatch):
    # a GEMM plan passes its operands as tensors and the launch describes them: where the
    # launcher is the known descriptor wrapper, the C function gets exactly what the wrapper
    # would have given it, and each operand is encoded once per base address
    from types import SimpleNamespace

    from gemsops.runtime import launch

    pytest.importorskip("triton.tools.tensor_descriptor")
    encoded = []

    def encode(d, meta):
        encoded.append((d.base.data_ptr(), meta))
        return [("map", d.base.data_ptr(), meta), *d.shape, *d.strides]

    received = []
    monkeypatch.setattr(launch, "_source_digest", lambda fn: "known")
    monkeypatch.setattr(launch, "_DESCRIPTOR_WRAPPERS", frozenset({"known"}))
    monkeypatch.setattr(launch, "_DESCRIPTOR_ENCODERS", frozenset({"known"}))
    monkeypatch.setattr(launch, "_current_device", lambda: -1)  # the CPU tensors' get_device()
    monkeypatch.setattr(launch, "_current_stream", lambda device: "stream")
    monkeypatch.setattr(launch, "_hooks_unset", lambda: True)
    wrapper = launch._cached_descriptors(
        _descriptor_wrapper(lambda *a: received.append(a), [0, 1], ["meta a", "meta b"], encode))
    middle = tuple(f"m{i}" for i in range(9))  # function, flags, metadata... (13 = 4 + 9)

    class FakePrepared:  # Prepared's normal path, with one compiled entry per head signature
        bound = SimpleNamespace(launcher=SimpleNamespace(fast=True))
        tail_key, tail_values, dims = (), (5, 6), (3, 1, 1)
        compiled: dict = {}
        normal_calls = 0

        def __call__(self, *head):
            FakePrepared.normal_calls += 1
            key, values = [-1], []
            launch._append_specs(key, values, head)
            self.compiled[tuple(key)] = launch._Ready((wrapper, middle, ("const",)), self.dims, self.tail_values)
            wrapper(*self.dims, "stream", *middle, *values, *self.tail_values, "const")

    described = launch.DescribedLaunch(FakePrepared(), [((8, 8), (8, 1), (8, 8)), ((8, 8), (8, 1), (8, 8))])
    a, b, b2, c = (torch.zeros(64, dtype=torch.float16) for _ in range(4))
    for x, y in [(a, b), (a, b), (a, b2), (a, b)]:
        described(x, y, c, 0.5)
        expected = (3, 1, 1, "stream", *middle,
                                   ("map", x.data_ptr(), "meta a"), 8, 8, 8, 1,
                                   ("map", y.data_ptr(), "meta b"), 8, 8, 8, 1,
                                   c.data_ptr(), 0.5, 5, 6, "const")
        assert received[-1] == expected
    assert FakePrepared.normal_calls == 1  # the first call compiles; the rest skip descriptors
    assert sorted(encoded) == sorted([(a.data_ptr(), "meta a"), (b.data_ptr(), "meta b"), (b2.data_ptr(), "meta b")])


def test_triton_3_6_tma_launches_keep_their_descriptors():
    # On the reference machine's Triton 3.6 the descriptor wrapper is recognised: a TMA GEMM's
    # compiled entry is the caching launch. A Triton whose wrapper changed fails here.
    import triton

    from tests.util import ON_GPU

    if not ON_GPU or not triton.__version__.startswith("3.6.") or torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("checks the descriptor wrapper of Triton 3.6 on Hopper")
    from gemsops.ops import _gemm

    cfg = {"TMA": 1, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    run = _gemm._runner(cfg, (0, 256, 1), (0, 256, 1), (0, 256, 1), (0, 0, 0), False, 1, 256, 256, 256, 1.0, 1.0,
                        torch.bfloat16, True, torch.device("cuda"))
    a, b = (torch.randn(256, 256, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        c = torch.empty(256, 256, device="cuda", dtype=torch.bfloat16)
        run(a, b, c, None, 1.0, 1.0)
        torch.testing.assert_close(c.float(), (a.float() @ b.float()), atol=0.5, rtol=2e-2)
    entries = [e for bd in _gemm._launch_tma.bound.values() for e in bd.compiled.values()]
    assert entries and all(e[0].__name__ == "launch_with_cached_descriptors" for e in entries), entries


def test_compile_only_runs_nothing_in_its_thread_and_everything_elsewhere():
    # the tuner's compile pass: a launch from the compiling thread compiles and leaves its
    # output untouched, while another thread's launches run as usual
    import threading

    import triton
    import triton.language as tl

    from gemsops.runtime import launch
    from tests.util import DEVICE

    @triton.jit
    def fill_kernel(out, value, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(out + offs, value, mask=offs < n)

    fill = launch.launcher(fill_kernel).bind(BLOCK=16)
    mine, theirs = torch.zeros(8, device=DEVICE), torch.zeros(8, device=DEVICE)
    with launch.compile_only():
        assert launch.compiling_only()
        fill((1,), mine, 1.0, 8)
        seen = []
        other = threading.Thread(target=lambda: (fill((1,), theirs, 2.0, 8), seen.append(launch.compiling_only())))
        other.start()
        other.join()
        assert seen == [False]
    assert not launch.compiling_only()
    assert torch.equal(mine, torch.zeros(8, device=DEVICE))
    assert torch.equal(theirs, torch.full((8,), 2.0, device=DEVICE))
    fill((1,), mine, 1.0, 8)
    assert torch.equal(mine, torch.ones(8, device=DEVICE))


class _OnGpu(torch.Tensor):
    """A CPU tensor that says it lives on GPU ``index``: the launcher's device logic reads
    nothing but ``get_device()``."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    index = 1

    def get_device(self):
        return self.index


class _OnGpu2(_OnGpu):
    index = 2


@pytest.fixture
def two_devices(lean_path, monkeypatch):
    """(calls, bound) as ``lean_path``, with device 0 current and device switches logged in ``calls``."""
    from gemsops.runtime import launch

    calls, bound = lean_path
    current = [0]

    def set_device(index):
        calls.append(("set_device", index))
        current[0] = index

    monkeypatch.setattr(launch, "_current_device", lambda: current[0])
    monkeypatch.setattr(launch, "_set_device", set_device)
    monkeypatch.setattr(launch, "_current_stream", lambda device: f"stream of {device}")
    return calls, bound


def test_a_launch_runs_on_the_gpu_that_holds_its_tensors(two_devices):
    # Triton launches on the current device, and the lean path hands it bare addresses: a
    # model placed on GPU 1 by device_map="auto" (current device still 0) would read GPU 1's
    # memory from GPU 0. The launch switches to the tensors' device and back.
    calls, bound = two_devices
    x = torch.zeros(64).as_subclass(_OnGpu)
    for launch_once in (lambda: bound((4,), x, 1024, 0.5), lambda: bound.prepare((4,), (1024, 0.5))(x)):
        calls.clear()
        launch_once()
        launch_once()
        kinds = [c[0] if c[0] != "set_device" else c for c in calls]
        assert kinds in ([("set_device", 1), "triton", ("set_device", 0), ("set_device", 1), "run", ("set_device", 0)],
                         [("set_device", 1), "run", ("set_device", 0)] * 2)
        assert calls[-2][1][3] == "stream of 1"  # that device's current stream


def test_tensors_on_several_devices_are_not_launched(two_devices):
    # torch raises for operands on different devices; the launch raises NotOnCurrentDevice,
    # an Unsupported, so that the host function runs torch's kernel and torch says so
    from gemsops.runtime import Unsupported
    from gemsops.runtime.registry import NotOnCurrentDevice

    calls, bound = two_devices
    on1, on2, cpu = torch.zeros(64).as_subclass(_OnGpu), torch.zeros(64).as_subclass(_OnGpu2), torch.zeros(64)
    for x, y, names in [(on1, on2, "cuda:1, cuda:2"), (cpu, on1, "cpu, cuda:1"), (cpu, cpu, "cpu")]:
        # the second tensor in the scale slot; as a plain launch, and fixed in a prepared one's tail
        for launch_once in (lambda: bound((4,), x, 1024, y), lambda: bound.prepare((4,), (1024, y))(x)):
            with pytest.raises(NotOnCurrentDevice, match=names) as err:
                launch_once()
            assert isinstance(err.value, Unsupported) and err.value.device is None
    assert calls == []  # nothing launched, no device switched


def test_a_tuner_timing_candidates_does_not_switch_devices(two_devices, monkeypatch):
    # the tuner times on the current device's streams; a launch switching away would leave
    # it timing nothing. The launch raises with the device instead, and the tuner tunes
    # again with that device current (next test).
    from gemsops.runtime.registry import NotOnCurrentDevice

    calls, bound = two_devices
    monkeypatch.setattr(tuner._tuning, "active", True)
    with pytest.raises(NotOnCurrentDevice) as err:
        bound((4,), torch.zeros(64).as_subclass(_OnGpu), 1024, 0.5)
    assert err.value.device == 1 and calls == []


def test_the_tuner_times_inputs_of_another_gpu_with_that_gpu_current(tmp_path, monkeypatch):
    import contextlib

    from gemsops.runtime.registry import NotOnCurrentDevice

    monkeypatch.setenv("GEMS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuner, "can_benchmark", lambda: True)
    monkeypatch.setattr(tuner, "_TUNERS", list(tuner._TUNERS))
    current = [0]

    @contextlib.contextmanager
    def device_set_to(index):
        before, current[0] = current[0], index
        try:
            yield
        finally:
            current[0] = before

    monkeypatch.setattr(tuner, "_current_device_set_to", device_set_to)
    timed_on = []
    monkeypatch.setattr(tuner, "benchmark", lambda fn: fn() or timed_on.append(current[0]) or 1.0)

    def run(cfg):  # as a launch of inputs on GPU 1 behaves while tuning
        assert tuner.tuning()
        if current[0] != 1:
            raise NotOnCurrentDevice("tuning on cuda:1", 1)

    t = tuner.Tuner("device_switch_test", default={"B": 1}, candidates=[{"B": 1}, {"B": 2}])
    assert t.choose(("k",), run) in t.candidates
    assert timed_on and set(timed_on) == {1} and current[0] == 0 and not tuner.tuning()


two_gpus = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                              reason="needs two GPUs")


@two_gpus
def test_a_model_on_the_second_gpu_runs_there_with_the_first_current(tmp_path, monkeypatch):
    # Hugging Face's device_map="auto" places layers on GPU 1 and leaves GPU 0 current.
    # gems' kernels must run on GPU 1 (and tune there), give torch's results, and leave
    # the current device alone; tensors on two GPUs get torch's error.
    import torch.nn.functional as F

    import gemsops
    from gemsops.runtime import launch
    from tests.util import assert_close

    monkeypatch.setenv("GEMS_CACHE_DIR", str(tmp_path))
    for t in tuner.all_tuners():  # nothing tuned yet: the first calls tune, on GPU 1
        monkeypatch.setattr(t, "memory", {})
        monkeypatch.setattr(t, "disk", None)
    torch.cuda.set_device(0)
    on1 = torch.device("cuda:1")
    bf = torch.bfloat16
    x, y = torch.randn(64, 4096, device=on1, dtype=bf), torch.randn(64, 4096, device=on1, dtype=bf)
    w, b = torch.randn(4096, device=on1, dtype=bf), torch.randn(4096, device=on1, dtype=bf)
    table, idx = torch.randn(1000, 256, device=on1, dtype=bf), torch.randint(0, 1000, (64,), device=on1)
    gate_up = torch.randn(64, 2 * 4096, device=on1, dtype=bf)
    proj = torch.randn(512, 4096, device=on1, dtype=bf) / 64
    cases = {
        "add": lambda: x + y,
        "mul scalar": lambda: x * 3,
        "silu": lambda: F.silu(x),
        "to fp32": lambda: x.float(),
        "strided add": lambda: x.t() + y.t(),
        "sum": lambda: x.sum(-1),
        "amax": lambda: x.amax(-1),
        "softmax": lambda: torch.softmax(x, -1),
        "rms_norm": lambda: F.rms_norm(x, (4096,), w, 1e-6),
        "layer_norm": lambda: F.layer_norm(x, (4096,), w, b, 1e-5),
        "embedding": lambda: F.embedding(idx, table),
        "cat": lambda: torch.cat([x, y], -1),
        "linear": lambda: F.linear(x, proj, b[:512]),
    }
    expected = {name: fn() for name, fn in cases.items()}
    launched_before = _launches_on(launch, 1)
    benchmarks_before = tuner.stats.benchmarks_run
    with gemsops.use_gems():
        got = {name: fn() for name, fn in cases.items()}
        in_place = x.clone()
        in_place.add_(y)
    got["in-place add"], expected["in-place add"] = in_place, x + y
    got["silu_and_mul"] = gemsops.ops.silu_and_mul(gate_up)
    expected["silu_and_mul"] = F.silu(gate_up[:, :4096]) * gate_up[:, 4096:]
    torch.cuda.synchronize(on1)
    assert torch.cuda.current_device() == 0
    for name, value in got.items():
        assert value.device == on1, name
        assert_close(value.float(), expected[name].float(), dtype=bf, scale=4, msg=name)
    assert _launches_on(launch, 1) > launched_before  # gems' kernels ran on GPU 1
    assert tuner.stats.benchmarks_run > benchmarks_before  # and were tuned there

    x0 = x.to("cuda:0")
    with pytest.raises(RuntimeError, match="same device"):
        torch.add(x0, y)
    with gemsops.use_gems(include=["add"]), pytest.raises(RuntimeError, match="same device"):
        torch.add(x0, y)


def _launches_on(launch, device: int) -> int:
    """Compiled-kernel entries the lean launcher keeps for ``device``."""
    return sum(1 for _, lau in launch._LAUNCHERS.values() for bound in lau.bound.values()
               for key in bound.compiled if key[0] == device)


def _same_inputs_on(device) -> dict:
    """One set of inputs, bit-identical on every device (drawn on the CPU, then copied)."""
    g = torch.Generator().manual_seed(0)
    bf = torch.bfloat16

    def r(*shape, dtype=bf):
        return torch.randn(*shape, generator=g).to(dtype).to(device)

    vocab, hidden = 1000, 256
    return {
        "x": r(64, 1024), "y": r(64, 1024), "w": r(1024), "b": r(1024), "wt": r(512, 1024),
        "a3": r(4, 64, 128), "b3": r(4, 128, 96), "x32": r(64, 1024, dtype=torch.float32),
        "table": r(vocab, hidden), "idx": torch.randint(0, vocab, (64,), generator=g).to(device),
        "cols": torch.randint(0, 1024, (64, 16), generator=g).to(device),
        "logits": r(64, 512), "target": torch.randint(0, 512, (64,), generator=g).to(device),
        "q": r(1, 4, 128, 64), "k": r(1, 4, 128, 64), "v": r(1, 4, 128, 64), "gate_up": r(64, 2048),
    }


# Forward calls through `use_gems`, each compared with torch's kernel on the same device.
_FORWARD_CASES = {
    "add": lambda i: i["x"] + i["y"],
    "mul scalar": lambda i: i["x"] * 3,
    "silu": lambda i: torch.nn.functional.silu(i["x"]),
    "gelu": lambda i: torch.nn.functional.gelu(i["x"]),
    "exp": lambda i: torch.exp(i["x"]),
    "where": lambda i: torch.where(i["x"] > 0, i["x"], i["y"]),
    "to fp32": lambda i: i["x"].float(),
    "strided add": lambda i: i["x"].t() + i["y"].t(),
    "sum": lambda i: i["x"].sum(-1),
    "mean": lambda i: i["x"].mean(-1),
    "amax": lambda i: i["x"].amax(-1),
    "argmax": lambda i: i["x32"].argmax(-1),
    "var": lambda i: i["x32"].var(-1),
    "cumsum": lambda i: i["x32"].cumsum(-1),
    "softmax": lambda i: torch.softmax(i["x"], -1),
    "log_softmax": lambda i: torch.log_softmax(i["x"], -1),
    "topk": lambda i: torch.topk(i["x32"], 8, -1),
    "sort": lambda i: torch.sort(i["x32"], -1),
    "rms_norm": lambda i: torch.nn.functional.rms_norm(i["x"], (1024,), i["w"], 1e-6),
    "layer_norm": lambda i: torch.nn.functional.layer_norm(i["x"], (1024,), i["w"], i["b"], 1e-5),
    "mm": lambda i: i["x"] @ i["wt"].t(),
    "addmm": lambda i: torch.addmm(i["b"][:512], i["x"], i["wt"].t()),
    "linear": lambda i: torch.nn.functional.linear(i["x"], i["wt"], i["b"][:512]),
    "bmm": lambda i: torch.bmm(i["a3"], i["b3"]),
    "embedding": lambda i: torch.nn.functional.embedding(i["idx"], i["table"]),
    "index_select": lambda i: i["table"].index_select(0, i["idx"]),
    "gather": lambda i: torch.gather(i["x"], 1, i["cols"]),
    "index_put": lambda i: i["table"].index_put((i["idx"],), i["table"][:64] * 2, accumulate=True),
    "cat": lambda i: torch.cat([i["x"], i["y"]], -1),
    "cross_entropy": lambda i: torch.nn.functional.cross_entropy(i["logits"], i["target"]),
    "sdpa causal": lambda i: torch.nn.functional.scaled_dot_product_attention(i["q"], i["k"], i["v"], is_causal=True),
}


def _training_step(i):
    """A small block's loss and gradients: norm, projections, activation, softmax, loss."""
    F = torch.nn.functional
    with torch.enable_grad():
        x, w, wt = (i[n].detach().requires_grad_() for n in ("x", "w", "wt"))
        h = F.silu(F.linear(F.rms_norm(x, (1024,), w, 1e-6), wt))  # [64, 512]
        logits = torch.log_softmax(h.float(), -1) + F.layer_norm(h, (512,)).float()
        loss = F.cross_entropy(logits, i["target"])
        loss.backward()
    return loss.detach(), x.grad, w.grad, wt.grad


# gemsops.ops calls (no enabling needed), each compared with the same call on GPU 0 while
# GPU 0 is current: the kernels' own correctness is tested in tests/ops. Not bit for bit:
# varlen attention on a GPU other than the current one runs torch's attention.
_DIRECT_CASES = {
    "silu_and_mul": lambda i: gems_ops.silu_and_mul(i["gate_up"]),
    "fused_add_rms_norm": lambda i: gems_ops.fused_add_rms_norm(i["x"].clone(), i["y"].clone(), i["w"], 1e-6),
    "rotary_embedding": lambda i: gems_ops.rotary_embedding(
        i["idx"], i["x"].clone(), i["y"].clone(), 64, i["table"][:, :64].contiguous(), True),
    "flash_attn_varlen": lambda i: gems_ops.flash_attn_varlen_func(
        i["q"][0].transpose(0, 1).contiguous(), i["k"][0].transpose(0, 1).contiguous(),
        i["v"][0].transpose(0, 1).contiguous(), _cu_seqlens(i), 78, _cu_seqlens(i), 78, causal=True),
}


def _cu_seqlens(i):
    return torch.tensor([0, 50, 128], dtype=torch.int32, device=i["x"].device)


@two_gpus
def test_plans_made_for_one_gpu_never_serve_the_other_gpus_tensors(tmp_path, monkeypatch):
    # Pipeline-parallel models put identical layers on both GPUs, so each op sees the same
    # shapes and dtypes on GPU 0 and GPU 1, with either GPU current. Host functions keep
    # plans per call signature (outputs' allocation stand-ins, split-K workspaces, compiled
    # launches); one made on GPU 0 and replayed for GPU 1's tensors would read or write the
    # wrong memory. Every op must give torch's result in every order of devices.
    import gemsops
    from gemsops.runtime import launch
    from tests.util import assert_close

    monkeypatch.setenv("GEMS_CACHE_DIR", str(tmp_path))
    inputs = {d: _same_inputs_on(torch.device(f"cuda:{d}")) for d in (0, 1)}
    expected = {d: {name: fn(inputs[d]) for name, fn in _FORWARD_CASES.items()} for d in (0, 1)}
    for d in (0, 1):
        expected[d]["training step"] = _training_step(inputs[d])
    direct_on_0 = None
    # each op first on GPU 0 (plans made there), then GPU 1 with GPU 0 current, then both
    # with GPU 1 current
    for data_gpu, current_gpu in [(0, 0), (1, 0), (1, 1), (0, 1), (1, 0)]:
        torch.cuda.set_device(current_gpu)
        i = inputs[data_gpu]
        with gemsops.use_gems():
            got = {name: fn(i) for name, fn in _FORWARD_CASES.items()}
            got["training step"] = _training_step(i)
        direct = {name: fn(i) for name, fn in _DIRECT_CASES.items()}
        torch.cuda.synchronize(data_gpu)
        where = f"tensors on cuda:{data_gpu}, cuda:{current_gpu} current"
        assert torch.cuda.current_device() == current_gpu, where
        for name, value in got.items():
            want = expected[data_gpu][name]
            for v, w in zip(*(t if isinstance(t, tuple) else (t,) for t in (value, want))):
                assert v.device == w.device, f"{name}, {where}"
                torch.testing.assert_close(v.float(), w.float(), atol=5e-2, rtol=5e-2, msg=f"{name}, {where}")
        direct = {name: tuple(t.cpu() for t in (v if isinstance(v, tuple) else (v,))) for name, v in direct.items()}
        if direct_on_0 is None:
            direct_on_0 = direct
        for name, value in direct.items():
            assert_close(value, direct_on_0[name], dtype=torch.bfloat16, scale=2, msg=f"{name}, {where}")
    torch.cuda.set_device(0)
    assert _launches_on(launch, 0) > 0 and _launches_on(launch, 1) > 0

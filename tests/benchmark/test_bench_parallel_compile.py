"""benchmark.parallel_compile: Triton's autotuner compiles its candidates before timing them,
and picks among the same candidates as without the patch."""
import pytest
import triton

from benchmark import parallel_compile

pytestmark = pytest.mark.skipif(not parallel_compile.available(), reason="Triton without AsyncCompileMode")


class RecordingKernel:
    """Stands in for the tuner's JIT function: records the warm-up runs it is asked for."""

    def __init__(self, fail_on=None):
        self.runs = []
        self.fail_on = fail_on

    def run(self, *args, **kwargs):
        self.runs.append((args, kwargs))
        if self.fail_on is not None and kwargs.get("BLOCK") == self.fail_on:
            raise RuntimeError("out of shared memory")


class Tuner:
    def __init__(self, fn, nargs):
        self.fn = fn
        self.nargs = nargs
        self.arg_names = ["x", "n", "unused"]


@pytest.fixture
def installed():
    assert parallel_compile.install()
    try:
        yield
    finally:
        parallel_compile.uninstall()


def test_every_config_is_compiled_not_launched_with_its_own_pre_hook():
    seen_by_hook = []
    configs = [triton.Config({"BLOCK": b}, num_warps=w, pre_hook=lambda nargs: seen_by_hook.append(
        (nargs["x"], nargs["BLOCK"]))) for b, w in ((16, 4), (32, 8))]
    kernel = RecordingKernel()
    parallel_compile._compile_all(Tuner(kernel, {"x": "X", "n": 7}), configs, {"grid": (3,), "warmup": False})

    assert seen_by_hook == [("X", 16), ("X", 32)]
    assert [args for args, _ in kernel.runs] == [("X", 7), ("X", 7)]  # positional, in parameter order
    for (_, kwargs), (block, warps) in zip(kernel.runs, ((16, 4), (32, 8))):
        assert kwargs["warmup"] is True and kwargs["grid"] == (3,)
        assert kwargs["BLOCK"] == block and kwargs["num_warps"] == warps


def test_a_config_that_fails_to_compile_does_not_stop_the_others():
    configs = [triton.Config({"BLOCK": b}) for b in (16, 32, 64)]
    kernel = RecordingKernel(fail_on=32)
    parallel_compile._compile_all(Tuner(kernel, {"x": 1, "n": 2}), configs, {"grid": (1,)})
    assert [kw["BLOCK"] for _, kw in kernel.runs] == [16, 32, 64]


def test_a_single_config_or_a_tuner_without_arguments_compiles_nothing_ahead():
    kernel = RecordingKernel()
    parallel_compile._compile_all(Tuner(kernel, {"x": 1}), [triton.Config({"BLOCK": 16})], {})
    parallel_compile._compile_all(Tuner(kernel, None), [triton.Config({"BLOCK": b}) for b in (16, 32)], {})
    assert kernel.runs == []


def test_installed_autotuner_prunes_as_before_and_compiles_what_it_kept(installed):
    from triton.runtime.autotuner import Autotuner

    @triton.jit
    def kernel(x, n, BLOCK: "triton.language.constexpr"):
        pass

    def keep_small(configs, nargs, **kwargs):
        return [c for c in configs if c.kwargs["BLOCK"] <= 32]

    configs = [triton.Config({"BLOCK": b}) for b in (16, 32, 64)]
    tuner = triton.autotune(configs=configs, key=["n"], prune_configs_by={"early_config_prune": keep_small})(kernel)
    assert isinstance(tuner, Autotuner)
    recorder = RecordingKernel()
    tuner.fn = recorder
    tuner.nargs = {"x": 0, "n": 5}

    kept = tuner.prune_configs({"grid": (1,)})

    assert [c.kwargs["BLOCK"] for c in kept] == [16, 32]
    assert [kw["BLOCK"] for _, kw in recorder.runs] == [16, 32]


def test_install_is_idempotent_and_uninstall_restores_triton():
    from triton.runtime.autotuner import Autotuner

    original = Autotuner.prune_configs
    assert parallel_compile.install() and parallel_compile.install()
    assert Autotuner.prune_configs is not original
    parallel_compile.uninstall()
    assert Autotuner.prune_configs is original

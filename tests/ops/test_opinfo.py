"""Every declared gems overload against PyTorch's OpInfo samples (tests/opinfo_harness.py).

One test per (op_db entry, variant, dtype) that reaches a declared overload: each sample
must agree with torch's kernel or be routed to it by the op's own support check. The
session ends with a table of counts (ops, samples, agreed, routed, failed); set
``GEMS_OPINFO_REPORT=<folder>`` to also write opinfo.json and opinfo.md there.
``GEMS_OPINFO_SAMPLE_CAP`` (default in the harness) bounds the samples per test.
"""

import math

import pytest
import torch

import gemsops
from gemsops.runtime import registry
from gemsops.runtime.registry import Unsupported, with_fallback
from tests import opinfo_harness as h
from tests.gems_probe import GemsProbe
from tests.util import DEVICE

_PLAN = h.trace(DEVICE)
_TASKS = h.pytest_tasks(_PLAN)  # float32 everywhere, float16/bfloat16 on plain calls


@pytest.fixture(scope="module", autouse=True)
def _summary_table(request):
    """The summary table at the end of the session (tests/opinfo_harness.terminal_summary).

    Registered here for single-process runs; under pytest-xdist the workers' results reach
    the controller as report properties, where a ``pytest_terminal_summary`` hook in
    tests/conftest.py calling ``terminal_summary`` prints them.
    """

    h.register_summary(request.config)
    yield


@pytest.mark.parametrize("entry,variant,dtype", _TASKS,
                         ids=[f"{e}-{v}-{str(d).removeprefix('torch.')}" for e, v, d in _TASKS])
def test_opinfo_samples(entry, variant, dtype, record_property):
    result = h.run_task(_PLAN, entry, variant, dtype)
    record_property(h.PROPERTY, result.to_dict())
    if result.error:  # torch's own sample generator failed for this dtype: nothing to compare
        pytest.skip(result.error)
    fails = result.failures()
    assert not fails, f"{len(fails)} of {len(result.samples)} samples failed:\n" + "\n".join(
        f"sample {f.index} (served {f.served}, routed {f.routed}): {f.detail}" for f in fails)


# -- the harness itself must be able to fail -------------------------------------------------------
def _swap_impl(overload, impl):
    """Replace one declaration's host function (restored by the returned callable)."""
    old = registry._DECLS[overload]
    registry._DECLS[overload] = registry.OpDecl(old.overload, old.family, impl)
    return lambda: registry._DECLS.__setitem__(overload, old)


needs_add = pytest.mark.skipif("add.Tensor" not in registry.declarations(), reason="add.Tensor not declared")


@needs_add
def test_harness_flags_a_wrong_kernel():
    real = registry.declarations()["add.Tensor"].impl

    def wrong_add(self, other, *, alpha=1):
        out = real(self, other, alpha=alpha)
        return out.add_(1e-3) if out.is_floating_point() and out.numel() else out

    restore = _swap_impl("add.Tensor", wrong_add)
    try:
        result = h.run_task(_PLAN, "add", "op", torch.float32)
    finally:
        restore()
    counts = result.counts()
    assert counts["failed"] > 0 and counts["agreed"] == 0, counts
    assert all("add.Tensor" in f.served for f in result.failures())


@needs_add
def test_harness_flags_a_crashing_kernel():
    def crash(self, other, *, alpha=1):
        raise RuntimeError("kernel exploded")

    restore = _swap_impl("add.Tensor", crash)
    try:
        result = h.run_task(_PLAN, "add", "op", torch.float32)
    finally:
        restore()
    assert result.counts()["failed"] == len(result.samples) > 0
    assert "kernel exploded" in result.failures()[0].detail


@needs_add
def test_harness_counts_routed_to_native():
    @with_fallback("add.Tensor")
    def refuse(self, other, *, alpha=1):
        raise Unsupported

    restore = _swap_impl("add.Tensor", refuse)
    try:
        result = h.run_task(_PLAN, "add", "op", torch.float32)
    finally:
        restore()
    counts = result.counts()
    assert counts["routed"] > 0 and counts["agreed"] == 0 and counts["failed"] == 0, counts


@needs_add
def test_harness_flags_an_input_mutation():
    real = registry.declarations()["add.Tensor"].impl

    def mutating(self, other, *, alpha=1):
        out = real(self, other, alpha=alpha)
        if isinstance(other, torch.Tensor) and other.is_floating_point() and other.numel():
            other.view(-1)[0] = 123.0  # an in-place store into an input of an out-of-place op
        return out

    restore = _swap_impl("add.Tensor", mutating)
    try:
        result = h.run_task(_PLAN, "add", "op", torch.float32)
    finally:
        restore()
    assert any("input after the call" in f.detail for f in result.failures())


def test_compare_rules():
    a = torch.tensor([1.0, float("nan"), float("inf")])
    h._compare(a, a.clone())
    with pytest.raises(h.Mismatch, match="dtype"):
        h._compare(a, a.double())
    with pytest.raises(h.Mismatch, match="shape"):
        h._compare(a, a[:2])
    with pytest.raises(h.Mismatch):
        h._compare(torch.tensor([1.0, 0.0, float("inf")]), a)  # NaN where torch has a number
    with pytest.raises(h.Mismatch):
        h._compare(torch.tensor([1, 2]), torch.tensor([1, 3]))  # integers are exact
    # off by 1e-3 from native, but native is itself far from the float64 reference: gems,
    # closer to the reference than native, agrees
    ref = torch.tensor([1.0], dtype=torch.float64)
    h._compare(torch.tensor([1.0005]), torch.tensor([1.0015]), ref)
    with pytest.raises(h.Mismatch, match="reference"):
        h._compare(torch.tensor([1.01]), torch.tensor([1.0015]), ref)


def test_compare_within_rounding_spread():
    """A composite's rounding spread widens the allowance element by element, never more."""
    ref = torch.tensor([100.0, 1.0], dtype=torch.float64)
    native = torch.tensor([100.0, 1.0])
    gems = torch.tensor([100.02, 1.0])  # element 0: 200 tolerance units off (1e-4 each)
    with pytest.raises(h.Mismatch, match="reference"):
        h._compare(gems, native, ref)
    # the float64 result itself moves by 0.01 there under input rounding: 0.02 is within
    # one tolerance plus twice that
    h._compare(gems, native, ref, spread=[torch.tensor([0.01, 0.0], dtype=torch.float64)])
    with pytest.raises(h.Mismatch, match="spread"):  # a spread on another element does not count
        h._compare(gems, native, ref, spread=[torch.tensor([0.0, 0.01], dtype=torch.float64)])
    with pytest.raises(h.Mismatch, match="spread"):  # twice the spread, not more
        h._compare(torch.tensor([100.05, 1.0]), native, ref, spread=[torch.tensor([0.01, 0.0], dtype=torch.float64)])
    with pytest.raises(h.Mismatch):  # NaN where the reference has a number
        h._compare(torch.tensor([float("nan"), 1.0]), native, ref, spread=[torch.full((2,), 1e9, dtype=torch.float64)])


class _Chain:
    """A stand-in OpInfo entry: ``x * y - z``, two gems calls when mul and sub are served."""

    op = staticmethod(lambda x, y, z: x * y - z)


needs_mul_sub = pytest.mark.skipif(
    not {"mul.Tensor", "sub.Tensor"} <= set(registry.declarations()), reason="mul/sub not declared")


@needs_mul_sub
def test_rounding_spread_allows_an_ill_conditioned_chain_only():
    """x, y are integers whose product P is exact in fp32 (ulp 1 between 2^23 and 2^24) and
    z = P - 3: the result, 3, is all cancellation, and the product's last bit decides it.
    Rounding the inputs alone moves the float64 result by at least u * P >= 0.6 per element
    (three inputs, signs never all cancel), so a mul that lands 1 ulp up (result 4) is
    within the chain's allowance; one 64 ulps up is not, and neither is a single wrong call."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(3200, 4000, (64,), generator=gen).float().to(DEVICE)
    y = torch.randint(3200, 4000, (64,), generator=gen).float().to(DEVICE)
    z = (x.double() * y.double() - 3).float()
    sample = h._Sample(x, (y, z), {})
    real = registry.declarations()["mul.Tensor"].impl

    def off_by(ulps):
        def mul(self, other):
            out = real(self, other)
            up = torch.full_like(out, math.inf)
            for _ in range(ulps):  # no arithmetic here: gems' own mul is this function
                out = torch.nextafter(out, up)
            return out
        return mul

    def run(ulps, fams):
        restore = _swap_impl("mul.Tensor", off_by(ulps))
        try:
            with GemsProbe() as probe:
                return h._run_sample(_Chain, "op", sample, 0, torch.float32, fams, probe)
        finally:
            restore()

    one_ulp = run(1, ["mul", "sub"])
    assert one_ulp.outcome == "agreed" and "spread" in one_ulp.detail, one_ulp
    assert one_ulp.served == {"mul.Tensor": 1, "sub.Tensor": 1}
    far = run(64, ["mul", "sub"])
    assert far.outcome == "failed" and "spread" in far.detail, far
    single = run(1, ["mul"])  # sub runs natively: one gems call, exact inputs, no allowance
    assert single.outcome == "failed" and "spread" not in single.detail, single


def test_clone_keeps_strides():
    base = torch.randn(6, 8)
    for t in (base.t(), base[:, ::2], base[1:, 2:5], torch.randn(0, 3).t(), torch.tensor(2.0)):
        c = h.clone_keep_strides(t)
        assert c.stride() == t.stride() and torch.equal(c, t)
        assert c.untyped_storage().data_ptr() != t.untyped_storage().data_ptr() or t.numel() == 0


def test_probe_restores_the_runtime():
    decls = dict(registry.declarations())
    gemsops.enable()
    before = torch._C._dispatch_dump("aten::add.Tensor") if "add.Tensor" in decls else None
    with GemsProbe(dry=True) as probe:
        if "add.Tensor" in decls:
            torch.randn(3, device=DEVICE) + torch.randn(3, device=DEVICE)
            assert probe.served["add.Tensor"] == 1
    assert registry.declarations() == decls
    if before is not None:
        assert torch._C._dispatch_dump("aten::add.Tensor") == before
    gemsops.disable()


def test_trace_maps_entries_to_overloads():
    """The tracer finds the entries named after an op, and lists the overloads nobody reaches."""
    reached = {o for ovs in _PLAN.hits.values() for o in ovs}
    missing = sorted(set(registry.declarations()) - reached)
    print(f"declared overloads no op_db entry reaches ({len(missing)}): {missing}")
    if "add.Tensor" in registry.declarations():
        assert "add.Tensor" in _PLAN.hits[("add", "op")]
        assert ("add", "op") in _PLAN.primary
    if "add_.Tensor" in registry.declarations():
        assert "add_.Tensor" in _PLAN.hits[("add", "inplace")]
    if "add.out" in registry.declarations():
        assert "add.out" in _PLAN.hits[("add", "out")]

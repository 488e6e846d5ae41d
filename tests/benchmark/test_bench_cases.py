"""The benchmark's case registry: coverage, shapes, byte counts, selection (no GPU needed)."""
import pytest
import torch

from benchmark import cases


@pytest.fixture(scope="module")
def quick():
    return cases.all_cases(quick=True)


@pytest.fixture(scope="module")
def full():
    return cases.all_cases(quick=False)


def test_every_op_has_cases_in_both_modes(quick, full):
    for suite in (quick, full):
        assert {c.op for c in suite} == set(cases.OPS)
    assert len(quick) < len(full)


def test_ids_unique_and_categories_known(quick, full):
    for suite in (quick, full):
        ids = [c.id for c in suite]
        assert len(ids) == len(set(ids))
        for c in suite:
            assert c.category in cases.CATEGORIES
            assert c.id.startswith(f"{c.op}/")


def test_report_order_follows_categories(quick):
    order = [cases.OPS.index(c.op) for c in quick]
    assert order == sorted(order)


def test_every_case_has_a_gems_path_and_a_throughput_measure(full):
    for c in full:
        assert c.gems_aten or (c.gems_direct and c.gems_call), c.id
        assert c.bytes > 0, c.id
        if c.category in ("matmul", "attention"):
            assert c.flops > 0, c.id


def test_model_shapes(quick, full):
    # memory-bound rows: hidden sizes 2048-8192, token counts 1 (decode) to 16384 (prefill)
    for rows in (cases.ROWS_QUICK, cases.ROWS_FULL):
        assert min(t for t, _ in rows) == 1 and max(t for t, _ in rows) == 16384
        assert all(2048 <= h <= 8192 for _, h in rows)
    # mm: decode and prefill M against the Llama-3-8B projection weights, in bf16 and fp16
    mm = {(c.shape, c.dtype) for c in quick if c.op == "mm"}
    for dtype in (torch.bfloat16, torch.float16):
        for m in (1, 16, 128, 4096):
            for k, n in ((4096, 4096), (4096, 14336), (14336, 4096)):
                assert (f"{m}x{n}x{k}", dtype) in mm
        assert ("8192x8192x8192", dtype) in mm
    assert any(c.op == "addmm" for c in quick) and any(c.op == "bmm" and c.dtype == torch.float16 for c in quick)
    # the reference-number shapes are present
    ids = {c.id for c in quick}
    for want in ("rms_norm/16384x8192/bf16", "rms_norm/4096x4096/bf16", "softmax/16384x8192/bf16",
                 "add/4096x4096/bf16", "sdpa/B1 H32/32 S4096 D128/bf16",
                 "paged_attention/B64 L4096 H32/8 D128/bf16", "paged_attention/B1 L32768 H32/8 D128/bf16"):
        assert want in ids
    assert {c.dtype for c in full if c.category == "norm"} == {torch.bfloat16, torch.float16, torch.float32}


def _nbytes(obj):
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 0


def test_inputs_build_and_native_runs_on_meta(quick):
    # every quick case builds its inputs and runs its native call (shapes only, no compute)
    for c in quick:
        inp = c.make("meta")
        out = c.native(inp)
        assert _nbytes(out) > 0, c.id


def test_bytes_match_inputs_plus_outputs_for_simple_ops(quick):
    for c in quick:
        if c.category in ("pointwise", "reduction", "softmax") or c.op == "cat":
            inp = c.make("meta")
            assert c.bytes == _nbytes(inp) + _nbytes(c.native(inp)), c.id


def test_select_by_op_category_and_all(quick):
    assert cases.select(quick, "all") == quick
    assert {c.op for c in cases.select(quick, "rms_norm,mm")} == {"rms_norm", "mm"}
    assert {c.op for c in cases.select(quick, ["fused"])} == set(cases.CATEGORIES["fused"])
    with pytest.raises(ValueError, match="unknown op"):
        cases.select(quick, "rmsnorm")

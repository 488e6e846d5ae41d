"""A Llama-style decoder stack trained one step natively and under ``gemsops.enable()``.

Forward, loss, backward and an AdamW step must give the same loss, gradients and updated
parameters as torch's kernels; the ``record`` log names the overloads that went through
gems, and a dispatch-mode count reports the share of aten calls gems served (printed; the
test only asks that gems served some, the share rises as op families land).
"""
import copy

import pytest
import torch

import gemsops
from gemsops.runtime import registry
from gemsops.runtime.oplog import read_log
from tests.models.coverage import aten_coverage, is_metadata, overload_name
from tests.models.llama import LlamaConfig, LlamaForCausalLM, train_step
from tests.opinfo_harness import SUMMARY_LINE
from tests.util import DEVICE, ON_GPU

CONFIGS = {
    "tiny": dict(cfg=LlamaConfig(), batch=2, seq=8),
    "tiny-sdpa": dict(cfg=LlamaConfig(attn="sdpa"), batch=2, seq=8),
}
if ON_GPU:
    CONFIGS["small"] = dict(cfg=LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=688,
                                            num_layers=4, num_heads=8, num_kv_heads=2), batch=4, seq=128)

# fp32 end to end; gems' matmuls and reductions may sum in another order than torch's
LOSS_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-4, atol=2e-5)
# One AdamW step replayed from the same gradients: a handful of fp32 roundings per element
# (gems may serve the step's pointwise ops), so 8 ulps of the weight plus 8 ulps of the move,
# which is at most lr per element (see _adam_move_bound).
ULP32 = 2.0 ** -23


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    """The shares reach the end-of-session summary (tests/opinfo_harness.terminal_summary)."""
    from tests.opinfo_harness import register_summary

    register_summary(request.config)
    yield


def _model_and_batch(spec, seed=0):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(spec["cfg"]).to(DEVICE)
    ids = torch.randint(0, spec["cfg"].vocab_size, (spec["batch"], spec["seq"]), device=DEVICE)
    return model, ids


def _optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def _step(model, ids):
    opt = _optimizer(model)
    loss = train_step(model, opt, ids)
    return loss


def _grads_and_params(model):
    return ({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
            {n: p.detach().clone() for n, p in model.named_parameters()})


def _replayed_step(model, initial, grads):
    """The parameters one AdamW step from ``initial`` with ``grads`` gives under torch's kernels."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(initial[n])
            p.grad = grads[n].clone() if n in grads else None
    _optimizer(model).step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _adam_move_bound(g, lr, eps):
    """Per element, how far apart two first AdamW steps can land when their gradients agree to GRAD_TOL.

    On the first step m_hat = g and sqrt(v_hat) = |g|, so a weight moves by lr * g / (|g| + eps)
    (plus weight decay, identical for both runs): the move is normalized, not proportional to g.
    Where the allowed gradient error d covers 0 the sign is undetermined and the moves may
    differ by 2 lr; elsewhere |d/dg (g / (|g| + eps))| = eps / (|g| + eps)**2 bounds the change.
    Gradients of order eps (1e-8), far below GRAD_TOL, make the weights' agreement that loose.
    """
    a = g.abs()
    d = GRAD_TOL["atol"] + GRAD_TOL["rtol"] * a
    lo = (a - d).clamp_min(0)
    move = (eps * d / (lo + eps) ** 2).clamp_max(2.0)
    return lr * torch.where(a <= d, torch.full_like(a, 2.0), move)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_train_step_matches_native(name, tmp_path, record_property):
    spec = CONFIGS[name]
    model, ids = _model_and_batch(spec)
    gems_model = copy.deepcopy(model)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}

    native_loss = _step(model, ids)
    native_grads, native_params = _grads_and_params(model)

    log = tmp_path / "gems.log"
    gemsops.enable(record=True, path=log)
    try:
        gems_loss, cov = aten_coverage(_step, gems_model, ids)
    finally:
        gemsops.disable()
    gems_grads, gems_params = _grads_and_params(gems_model)

    print(f"\n[{name}] loss native {native_loss.item():.6f} gems {gems_loss.item():.6f}")
    print(cov.table())

    torch.testing.assert_close(gems_loss, native_loss, **LOSS_TOL)
    assert gems_grads.keys() == native_grads.keys()
    for n in native_grads:
        torch.testing.assert_close(gems_grads[n], native_grads[n], **GRAD_TOL, msg=lambda m: f"grad of {n}: {m}")
    # the step itself, from gems' own gradients, is checked tightly: this is where an optimizer
    # op served by gems (zeros_like for the moments, pointwise ops on CPU) would show
    replay = _replayed_step(model, initial, gems_grads)
    hp = _optimizer(model).defaults
    for n in native_params:
        torch.testing.assert_close(gems_params[n], replay[n], rtol=8 * ULP32, atol=8 * ULP32 * hp["lr"],
                                   msg=lambda m: f"{n} after AdamW from gems' gradients: {m}")
        # against the native run, only as close as the gradients' agreement allows through
        # AdamW's normalized move
        bound = _adam_move_bound(native_grads[n], hp["lr"], hp["eps"]) if n in native_grads else 0.0
        diff = (gems_params[n] - native_params[n]).abs()
        slack = 8 * ULP32 * (native_params[n].abs() + hp["lr"])
        assert bool((diff <= bound + slack).all()), \
            f"{n} after AdamW: {diff.max().item():.3g} off, beyond what the gradient tolerance allows"
    assert all(not torch.equal(native_params[n], p) for n, p in initial.items()), \
        "the step left a parameter unchanged: the comparison would be vacuous"

    # the record log names what went through gems: declared overloads, and every one the
    # dispatch-mode count saw served
    logged = {op.removeprefix("aten::") for _, op, _ in read_log(log)} if log.exists() else set()
    assert logged <= set(registry.declarations())
    assert set(+cov.served) <= logged
    print(f"[{name}] overloads through gems (record log): {sorted(logged)}")
    line = (f"llama step [{name}, {DEVICE}]: gems served {100 * cov.share:.1f}% of aten calls "
            f"({cov.served_total}/{cov.total}, views/metadata excluded; target 95%); not served: "
            + ", ".join(f"{op} x{n}" for op, n in (cov.calls - cov.served).most_common(8)))
    print(line)
    record_property(SUMMARY_LINE, line)
    assert cov.total > 0
    if registry.declarations():
        assert cov.share > 0, "gems served none of the step's aten calls"


def test_native_run_counts_nothing_as_gems():
    """With gems off, the counter sees the step's calls and credits none of them to gems."""
    spec = CONFIGS["tiny"]
    model, ids = _model_and_batch(spec)
    _, cov = aten_coverage(_step, model, ids)
    assert cov.total > 50 and cov.served_total == 0 and cov.share == 0.0
    # the expected families show up as real (counted) calls
    for op in ("mm", "_softmax", "_log_softmax", "nll_loss_forward", "embedding"):
        assert any(k == op or k.startswith(op + ".") for k in cov.calls), (op, sorted(cov.calls))
    assert "view" not in cov.calls and "transpose.int" not in cov.calls and cov.excluded["view"] > 0


def test_metadata_classification():
    aten = torch.ops.aten
    for f in (aten.view.default, aten.transpose.int, aten.t.default, aten.expand.default, aten.slice.Tensor,
              aten.select.int, aten.unsqueeze.default, aten.permute.default, aten._unsafe_view.default,
              aten.detach.default, aten.empty.memory_format, aten.as_strided.default, aten.split.Tensor):
        assert is_metadata(f), f
    for f in (aten.add.Tensor, aten.add_.Tensor, aten.mm.default, aten.copy_.default, aten._to_copy.default,
              aten.clone.default, aten.fill_.Scalar, aten.add.out):
        assert not is_metadata(f), f
    assert overload_name(aten.mm.default) == "mm" and overload_name(aten.add_.Tensor) == "add_.Tensor"

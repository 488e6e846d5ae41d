"""Every kernel family on tensors past 2**31 elements, against torch's own kernels (GPU only).

Offsets past 2**31 need 64-bit arithmetic wherever a kernel multiplies a program id by a
block, a row by its stride or a split by its chunk. The interpreter cannot run tensors
that large, so CI reaches the 64-bit variants only through small stand-ins; these tests run
them for real in the GPU check. They cut across the op files on purpose: one place that
says which families were checked past 2**31, sharing the big inputs (4-8 GiB each).

These checks found a silent error (thirtieth session): a reduction of one row of more than 2**31
elements (``x.sum()``, ``x.max()``) split the row over programs at ``program * chunk``
computed in 32 bits, and read memory before the tensor (a wrong sum, or a crash).
"""
import gc
import importlib

import pytest
import torch
import torch.nn.functional as F

import gemsops
from tests.gems_probe import GemsProbe
from tests.util import ON_GPU, tol

pytestmark = [pytest.mark.skipif(not ON_GPU, reason="tensors of 4-8 GiB on a GPU"), pytest.mark.big_memory]

N31 = 2**31
BF = torch.bfloat16
ROWS = N31 // 8192 + 4  # rows of 8192 past 2**31 elements (an even count)
CHUNK = 1 << 28


@pytest.fixture(autouse=True)
def _free_memory():
    free, _ = torch.cuda.mem_get_info()
    if free < 40 << 30:
        pytest.skip("needs about 40 GiB of free GPU memory")
    yield
    gc.collect()
    torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(0)
    return torch.randn(ROWS, 8192, device="cuda", dtype=BF)


def close(actual, expected, scale=1.0):
    """``torch.testing.assert_close`` with the dtype's tolerance, chunk by chunk (no full-size temporaries)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    a, e = actual.reshape(-1), expected.reshape(-1)
    opts = tol(actual.dtype, scale) if actual.is_floating_point() else dict(atol=0, rtol=0)
    for s in range(0, a.numel(), CHUNK):
        torch.testing.assert_close(a[s:s + CHUNK], e[s:s + CHUNK], **opts, msg=lambda m: f"elements from {s}: {m}")


def through_gems(include, fn, served=None):
    """``fn()`` inside ``use_gems(include)``; asserts that gems served each overload in ``served``."""
    with GemsProbe() as probe, gemsops.use_gems(include=include):
        out = fn()
        torch.cuda.synchronize()
    for overload in served or ():
        assert probe.served[overload] >= 1, (overload, dict(probe.served), dict(probe.routed))
    return out


def one_by_one(cases, scale=1.0):
    """For each (family, overload, fn[, scale]): ``fn()`` natively and through gems, compared;
    one at a time, since a few 4 GiB results at once would not fit beside the inputs."""
    for family, overload, fn, *own_scale in cases:
        native = fn()
        close(through_gems([family], fn, served=[overload]), native, scale=own_scale[0] if own_scale else scale)
        del native


def sum64(t):
    flat = t.reshape(-1)
    return sum(flat[s:s + CHUNK].double().sum() for s in range(0, flat.numel(), CHUNK))


def test_reductions_over_all_elements(x):
    # the tail past 2**31 is marked: a split that misread it would miss 7% of the sum and the maximum
    xt = x.abs()
    xt[-16:] = 1000.0
    xt[-1, -7] = 4096.0
    got = through_gems(["sum", "mean", "max", "min", "amax", "argmax", "var", "linalg_vector_norm"],
                       lambda: (xt.sum(), xt.mean(), xt.max(), (-xt).min(), xt.amax(), xt.argmax(), xt.var(),
                                torch.linalg.vector_norm(xt)),
                       served=["sum", "mean", "max", "min", "amax", "argmax", "var.correction", "linalg_vector_norm"])
    n = xt.numel()
    total, squares = sum64(xt), sum64(xt.float().square())
    close(got[0], total.to(BF))
    close(got[1], (total / n).to(BF))
    close(got[6], ((squares - total * total / n) / (n - 1)).to(BF))
    close(got[7], squares.sqrt().to(BF))
    assert got[2].item() == 4096.0 and got[3].item() == -4096.0 and got[4].item() == 4096.0
    assert got[5].item() == xt.numel() - 7


def test_reductions_along_a_dim(x):
    near_one = 1 + x * 0.001
    last_row = torch.zeros_like(x, dtype=torch.bool)
    last_row[-1] = True
    native = (x.sum(-1), x.float().sum(0).to(BF), x.mean(-1), x.amax(-1), x.amax(0), x.argmax(-1),
              x.float().var(-1).to(BF), x.float().norm(dim=-1).to(BF), near_one.prod(-1), (x < 100).all(),
              last_row.any())
    got = through_gems(["sum", "mean", "amax", "argmax", "var", "linalg_vector_norm", "prod", "all", "any"],
                       lambda: (x.sum(-1), x.sum(0), x.mean(-1), x.amax(-1), x.amax(0), x.argmax(-1),
                                x.var(-1), torch.linalg.vector_norm(x, dim=-1), near_one.prod(-1), (x < 100).all(),
                                last_row.any()),
                       served=["sum.dim_IntList", "mean.dim", "amax", "argmax", "var.correction", "linalg_vector_norm",
                               "prod.dim_int", "all", "any"])
    for g, n in zip(got, native):
        close(g, n, scale=2)


def test_transposed_views_and_integers(x):
    xt = x.t()
    one_by_one([
        ("sum", "sum.dim_IntList", lambda: xt.sum(0)),
        ("amax", "amax", lambda: xt.amax()),
        ("softmax", "_softmax", lambda: torch.softmax(xt, 0)),
        ("add", "add.Tensor", lambda: xt + 1.0),
    ], scale=2)
    ints = (x * 100).to(torch.int32)
    one_by_one([("sum", "sum", lambda: ints.sum()), ("sum", "sum.dim_IntList", lambda: ints.sum(-1))], scale=0)


def test_pointwise(x):
    one_by_one([
        ("_to_copy", "_to_copy", lambda: x.float()),
        ("add", "add.Tensor", lambda: x[:, :1] + x[0]),
        ("silu", "silu", lambda: F.silu(x)),
        ("where", "where.self", lambda: torch.where(x > 0, x, 0.0)),
    ])


def test_indexing_and_concatenation(x):
    backwards = torch.arange(ROWS - 1, -1, -1, device="cuda")
    picks = torch.tensor([ROWS - 1, 0, ROWS - 2], device="cuda")
    cols = torch.randint(0, 8192, (ROWS, 4), device="cuda")
    last_rows = torch.randint(ROWS - 5, ROWS, (4, 8192), device="cuda")
    updates = torch.randn(3, 8192, device="cuda", dtype=BF)
    half = ROWS // 2
    one_by_one([
        ("index_select", "index_select", lambda: x.index_select(0, backwards)),
        ("index", "index.Tensor", lambda: x[picks]),
        ("cat", "cat", lambda: torch.cat([x[:half], x[half:]], 0)),
        ("cat", "cat", lambda: torch.cat([x[:, :4096], x[:, 4096:]], -1)),
        ("cat", "cat", lambda: torch.cat([x[:, i * 1024:(i + 1) * 1024] for i in range(6)], -1)),  # two launches
        ("gather", "gather", lambda: x.gather(1, cols)),
        ("gather", "gather", lambda: x.gather(0, last_rows)),
        ("index_select", "index_select", lambda: x.index_select(1, torch.arange(8191, -1, -1, device="cuda"))),
        ("scatter", "scatter_.value", lambda: x.clone().scatter_(1, cols, 1.0)),
        # repeated columns in a row are added in the atomics' order: last bits may differ
        ("scatter_add", "scatter_add_", lambda: x.clone().scatter_add_(1, cols, x[:, :4]), 1.0),
        ("index_put", "index_put_", lambda: x.clone().index_put_((picks,), updates, accumulate=True)),
        ("slice_backward", "slice_backward",
         lambda: torch.ops.aten.slice_backward(x[:, :4096], [ROWS, 8192], 1, 4096, 8192, 1)),
        ("triu", "triu", lambda: x.triu(5)),
    ], scale=0)


def test_norms_softmax_and_gated_activation(x, monkeypatch):
    w, b = torch.randn(8192, device="cuda", dtype=BF), torch.randn(8192, device="cuda", dtype=BF)
    g = torch.randn_like(x)

    def step():
        xx, ww, bb = (t.detach().requires_grad_() for t in (x, w, b))
        y1 = F.rms_norm(xx, (8192,), ww, 1e-6)
        y1.backward(g)
        dx1, dw1 = xx.grad, ww.grad
        xx.grad = ww.grad = None
        y2 = F.layer_norm(xx, (8192,), ww, bb, 1e-6)
        y2.backward(g)
        return y1.detach(), dx1, dw1, y2.detach(), xx.grad, ww.grad, bb.grad

    native = step()
    got = through_gems(["rms_norm", "layer_norm"], step, served=[
        "_fused_rms_norm", "_fused_rms_norm_backward", "native_layer_norm", "native_layer_norm_backward"])
    for a, e in zip(got, native):
        close(a, e, scale=2)
    del got, native
    y = torch.softmax(x, -1)
    native = torch.ops.aten._softmax_backward_data(g, y, -1, BF)
    close(through_gems(["softmax"], lambda: torch.ops.aten._softmax_backward_data(g, y, -1, BF),
                       served=["_softmax_backward_data"]), native, scale=2)
    y = torch.log_softmax(x, -1)
    native = torch.ops.aten._log_softmax_backward_data(g, y, -1, BF)
    close(through_gems(["log_softmax"], lambda: torch.ops.aten._log_softmax_backward_data(g, y, -1, BF),
                       served=["_log_softmax_backward_data"]), native, scale=2)
    del y, native
    # the explicit fused ops: their torch paths would now raise, so gems' kernels must serve
    for name, torch_path in (("fused_add_rms_norm", "_torch_fused_add_rms_norm"), ("silu_and_mul", "_torch_gated")):
        monkeypatch.setattr(importlib.import_module(f"gemsops.ops.{name}"), torch_path, None)
    r = x + g
    ref = F.rms_norm(r, (8192,), w, 1e-6)
    xx, rr = x.clone(), g.clone()
    gemsops.ops.fused_add_rms_norm(xx, rr, w, 1e-6)
    close(rr, r, scale=0)
    close(xx, ref, scale=2)
    del xx, rr, r, ref, g
    close(gemsops.ops.silu_and_mul(x), F.silu(x[:, :4096]) * x[:, 4096:])
    wide = x.view(ROWS // 2, 16384)
    close(gemsops.ops.silu_and_mul(wide), F.silu(wide[:, :8192]) * wide[:, 8192:])
    del wide
    xg = x.detach().requires_grad_()
    y = gemsops.ops.silu_and_mul(xg)
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, xg, g)
    del y, xg
    for s in range(0, ROWS, CHUNK // 8192):  # the gradient in fp32, rounded once, as the kernel does
        a, b, gc = (t.float() for t in (x[s:s + CHUNK // 8192, :4096], x[s:s + CHUNK // 8192, 4096:],
                                        g[s:s + CHUNK // 8192]))
        sig = torch.sigmoid(a)
        close(dx[s:s + CHUNK // 8192, :4096], (gc * b * sig * (1 + a * (1 - sig))).to(BF), scale=2)
        close(dx[s:s + CHUNK // 8192, 4096:], (gc * a * sig).to(BF), scale=2)


def test_group_norm_forward_and_backward(x):
    xs = x.view(ROWS // 4, 4, 8192)  # [N, C, HxW], 2 groups of 2 channels
    w, b = torch.randn(4, device="cuda", dtype=BF), torch.randn(4, device="cuda", dtype=BF)
    g = torch.randn_like(xs)

    def step():
        xx, ww, bb = (t.detach().requires_grad_() for t in (xs, w, b))
        y = F.group_norm(xx, 2, ww, bb)
        y.backward(g)
        return y.detach(), xx.grad, ww.grad, bb.grad

    native = step()
    got = through_gems(["group_norm"], step, served=["native_group_norm", "native_group_norm_backward"])
    for a, e in zip(got, native):
        close(a, e, scale=4)


def _rotated(x, cos, sin):
    """Neox rotation of the last dim in fp32, rounded once (the kernels' arithmetic)."""
    x1, x2 = x.float().chunk(2, -1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1).to(x.dtype)


def test_rotary_embedding_vllm_and_hf(monkeypatch):
    rot = importlib.import_module("gemsops.ops.rotary_embedding")
    monkeypatch.setattr(rot, "_torch_rotary", None)  # the torch paths would now raise
    monkeypatch.setattr(rot, "_hf_torch", None)
    torch.manual_seed(0)
    tokens = N31 // 4096 + 8  # 32 query heads of 128 per token: past 2**31 elements
    q = torch.randn(tokens, 32 * 128, device="cuda", dtype=BF)
    k = torch.randn(tokens, 8 * 128, device="cuda", dtype=BF)
    positions = torch.randint(0, 4096, (tokens,), device="cuda")
    angles = torch.arange(4096, device="cuda")[:, None] * 10000.0 ** (-torch.arange(64, device="cuda") / 64)
    cache = torch.cat((angles.cos(), angles.sin()), -1).to(BF)
    q0 = q.clone()
    gemsops.ops.rotary_embedding(positions, q, k, 128, cache, True)
    step = CHUNK // 4096
    for s in range(0, tokens, step):  # the last chunk holds the rows past 2**31
        cs = cache[positions[s:s + step]].float()
        c, sn = cs[:, None, :64], cs[:, None, 64:]
        close(q[s:s + step].view(-1, 32, 128), _rotated(q0[s:s + step].view(-1, 32, 128), c, sn))
    del q, q0, k
    seq = N31 // (32 * 128) + 8  # HF layout [batch, heads, seq, dim]
    q = torch.randn(1, 32, seq, 128, device="cuda", dtype=BF)
    k = torch.randn(1, 8, seq, 128, device="cuda", dtype=BF)
    pos = torch.arange(seq, device="cuda") % 4096
    cos, sin = cache[pos, :64].repeat(1, 2)[None], cache[pos, 64:].repeat(1, 2)[None]
    qe, ke = gemsops.ops.apply_rotary_pos_emb(q, k, cos, sin)
    for h in range(0, 32, 4):
        close(qe[:, h:h + 4], _rotated(q[:, h:h + 4], cos[:, None, :, :64].float(), sin[:, None, :, :64].float()))
    close(ke, _rotated(k, cos[:, None, :, :64].float(), sin[:, None, :, :64].float()))


def test_topk_and_cumsum(x):
    values, indices = through_gems(["topk"], lambda: x.topk(8, -1), served=["topk"])
    close(values, x.topk(8, -1).values, scale=0)
    # bf16 rows hold ties; any index of an equal value is right
    close(x.gather(1, indices), values, scale=0)
    got = through_gems(["cumsum"], lambda: x.float().cumsum(-1), served=["cumsum"])  # fp32: past 2**31 elements
    torch.testing.assert_close(got[-64:].double(), x[-64:].double().cumsum(-1), **tol(torch.float32, 64))
    torch.testing.assert_close(got[:64].double(), x[:64].double().cumsum(-1), **tol(torch.float32, 64))


def test_softmax_and_nll_loss_over_a_wide_vocabulary():
    logits = torch.randn(16400, 131072, device="cuda", dtype=BF)
    target = torch.randint(0, 131072, (16400,), device="cuda")

    def run():
        logp = torch.log_softmax(logits, -1)
        return torch.softmax(logits, -1), logp, F.nll_loss(logp, target), F.nll_loss(logp, target, reduction="none")

    native = run()
    got = through_gems(["softmax", "log_softmax", "nll_loss"], run, served=["_softmax", "_log_softmax", "nll_loss_forward"])
    for g, n in zip(got, native):
        close(g, n)


def test_embedding_forward_and_backward():
    table = torch.randn(128256, 4096, device="cuda", dtype=BF)
    tokens = torch.randint(0, 128256, (N31 // 4096 + 7,), device="cuda")
    close(through_gems(["embedding"], lambda: F.embedding(tokens, table), served=["embedding"]),
          F.embedding(tokens, table), scale=0)
    del tokens, table
    rows = N31 // 4096 + 5  # the table's gradient is past 2**31 elements; most tokens hit its last rows
    grad = torch.randn(8192, 4096, device="cuda", dtype=BF)
    tokens = torch.randint(rows - 64, rows, (8192,), device="cuda")
    tokens[:100] = torch.randint(0, rows, (100,), device="cuda")
    native = torch.ops.aten.embedding_dense_backward(grad, tokens, rows, -1, False)
    got = through_gems(["embedding_dense_backward"],
                       lambda: torch.ops.aten.embedding_dense_backward(grad, tokens, rows, -1, False),
                       served=["embedding_dense_backward"])
    close(got, native, scale=2)


def test_matmul_outputs_and_inputs(x):
    a = torch.randn(65, 4096, 128, device="cuda", dtype=BF)
    b = torch.randn(65, 128, 8192, device="cuda", dtype=BF)
    close(through_gems(["bmm"], lambda: torch.bmm(a, b), served=["bmm"]), torch.bmm(a, b), scale=2)
    del a, b
    rows = x.view(-1, 4096)  # [2 * ROWS, 4096] against a 4096x4096 weight: an output past 2**31
    w, bias, v = (torch.randn(*s, device="cuda", dtype=BF) for s in ((4096, 4096), (4096,), (8192,)))

    def run():
        return F.linear(rows, w), torch.addmm(bias, rows, w.t()), torch.mv(x, v)

    native = run()
    got = through_gems(["linear", "addmm", "mv"], run, served=["linear", "addmm", "mv"])
    for g, n in zip(got, native):
        close(g, n, scale=4)


def test_sdpa():
    q, k, v = (torch.randn(129, 32, 4096, 128, device="cuda", dtype=BF) for _ in range(3))
    native = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = through_gems(["sdpa"], lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                       served=["scaled_dot_product_attention"])
    close(got, native, scale=2)


def test_flash_attn_varlen():
    seq, seqs = 4096, 129
    q = torch.randn(seqs * seq, 32, 128, device="cuda", dtype=BF)
    k, v = (torch.randn(seqs * seq, 8, 128, device="cuda", dtype=BF) for _ in range(2))
    cu = torch.arange(0, seqs + 1, device="cuda", dtype=torch.int32) * seq
    out = gemsops.ops.flash_attn_varlen_func(q, k, v, cu, seq, cu, seq, causal=True)
    for s in (0, seqs - 1):
        part = slice(s * seq, (s + 1) * seq)
        ref = F.scaled_dot_product_attention(*(t[part].transpose(0, 1)[None] for t in (q, k, v)), is_causal=True,
                                             enable_gqa=True)[0].transpose(0, 1)
        close(out[part], ref, scale=2)


@pytest.mark.parametrize("layout", ["flash", "vllm"])
def test_paged_attention_and_cache_writer(layout):
    page, heads, kv_heads, dim, seqs, length = 16, 32, 8, 128, 4, 4096
    blocks = N31 // (page * kv_heads * dim) + 9  # each cache past 2**31 elements
    if layout == "flash":
        kc = torch.randn(blocks, page, kv_heads, dim, device="cuda", dtype=BF)
        vc = torch.randn(blocks, page, kv_heads, dim, device="cuda", dtype=BF)
    else:
        kc = torch.randn(blocks, kv_heads, dim // 8, page, 8, device="cuda", dtype=BF)
        vc = torch.randn(blocks, kv_heads, dim, page, device="cuda", dtype=BF)

    def dense(cache, pages, key):
        """[kv_heads, tokens, dim] of the given pages."""
        c = cache[pages.long()]
        if layout == "vllm":  # K [blocks, heads, dim / 8, page, 8], V [blocks, heads, dim, page]
            c = c.permute(0, 3, 1, 2, 4) if key else c.permute(0, 3, 1, 2)
        return c.reshape(-1, kv_heads, dim).transpose(0, 1)

    # the writer first: tokens into the cache's last pages
    kt, vt = (torch.randn(64, kv_heads, dim, device="cuda", dtype=BF) for _ in range(2))
    slots = (blocks - 4) * page + torch.arange(64, device="cuda")
    writer = gemsops.ops.reshape_and_cache_flash if layout == "flash" else gemsops.ops.reshape_and_cache
    writer(kt, vt, kc, vc, slots)
    last = torch.arange(blocks - 4, blocks, device="cuda")
    close(dense(kc, last, True).transpose(0, 1), kt, scale=0)
    close(dense(vc, last, False).transpose(0, 1), vt, scale=0)
    # then decode over pages taken from the end of the cache
    table = (blocks - 1 - torch.arange(seqs * (length // page), device="cuda")).view(seqs, -1).to(torch.int32)
    lens = torch.full((seqs,), length, device="cuda", dtype=torch.int32)
    q = torch.randn(seqs, heads, dim, device="cuda", dtype=BF)
    out = gemsops.ops.paged_attention(q, kc, vc, table, lens, kv_layout=layout)
    for s in range(seqs):
        k, v = dense(kc, table[s], True)[None].float(), dense(vc, table[s], False)[None].float()
        ref = F.scaled_dot_product_attention(q[s][None, :, None].float(), k, v, enable_gqa=True)[0, :, 0]
        close(out[s], ref.to(BF), scale=2)


def test_factories_and_dropout():
    n = N31 + (1 << 24)
    full = through_gems(["full"], lambda: torch.full((n,), 1.5, device="cuda", dtype=BF), served=["full"])
    assert full[-1].item() == 1.5 and bool((full[N31 - 8:] == 1.5).all())
    del full
    ramp = through_gems(["arange"], lambda: torch.arange(n, device="cuda"), served=["arange"])
    assert ramp[-1].item() == n - 1 and torch.equal(ramp[N31 - 4:N31 + 4], torch.arange(N31 - 4, N31 + 4, device="cuda"))
    del ramp
    ones = torch.ones(n, device="cuda", dtype=BF)
    y, mask = through_gems(["native_dropout"], lambda: torch.ops.aten.native_dropout(ones, 0.5, True),
                           served=["native_dropout"])
    close(y, mask.to(BF) * 2, scale=0)
    # elements past 2**31 draw their own numbers: half kept, independent of the first ones
    tail = mask[N31:].float().mean().item()
    agree = (mask[:1 << 24] == mask[N31:]).float().mean().item()
    assert abs(tail - 0.5) < 0.01 and abs(agree - 0.5) < 0.01, (tail, agree)

import pytest
import torch

import gemsops
from gemsops.ops.embedding import embedding, embedding_dense_backward

kemb, kbwd = embedding.__wrapped__, embedding_dense_backward.__wrapped__  # no silent native fallback
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close, randn, reference


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32])
def test_embedding_forward(dtype, idx_dtype):
    w = randn(10, 6, dtype=dtype)
    idx = torch.randint(0, 10, (3, 4), dtype=idx_dtype, device=DEVICE)
    torch.testing.assert_close(kemb(w, idx), torch.nn.functional.embedding(idx, w), rtol=0, atol=0)


@pytest.mark.parametrize("dim", [1024, 2048, 3000, 4096, 8192 + 4096])
def test_embedding_wide_rows(dim):
    # widths that split evenly into blocks of up to 4096 elements (1024, 2048, 4096, 12288)
    # are copied in blocks that wide, the others (3000) in 1024-wide ones
    w = randn(40, dim, dtype=torch.bfloat16)
    idx = torch.randint(0, 40, (7,), device=DEVICE)
    torch.testing.assert_close(kemb(w, idx), torch.nn.functional.embedding(idx, w), rtol=0, atol=0)
    torch.testing.assert_close(kemb(w, idx[:3]), w[idx[:3]], rtol=0, atol=0)  # fewer rows than a tile


def test_embedding_noncontiguous_0d_empty():
    w = randn(6, 10).t()  # (10, 6), strides (1, 10)
    idx = torch.tensor([[1, 9], [0, 0]], device=DEVICE).t()
    torch.testing.assert_close(kemb(w, idx), w[idx], rtol=0, atol=0)
    torch.testing.assert_close(kemb(w, torch.tensor(3, device=DEVICE)), w[3], rtol=0, atol=0)
    assert kemb(w, torch.empty(2, 0, dtype=torch.long, device=DEVICE)).shape == (2, 0, 6)


def test_embedding_repeated_signatures_read_their_own_inputs():
    # from its second call on, a signature takes a planned launch: each call must read its
    # own table and indices; other layouts and index dtypes must not share the plan
    for _ in range(3):
        for w in (randn(10, 6), randn(6, 10).t(), randn(10, 12)[:, ::2]):
            for idx in (torch.randint(0, 10, (3, 4), device=DEVICE),
                        torch.randint(0, 10, (3, 4), dtype=torch.int32, device=DEVICE),
                        torch.randint(0, 10, (4, 3), device=DEVICE).t()):
                torch.testing.assert_close(kemb(w, idx), w[idx.long()], rtol=0, atol=0)


@pytest.mark.skipif(ON_GPU, reason="torch device-asserts on the GPU")
def test_embedding_out_of_range_raises():
    w = randn(4, 3)
    embedding(w, torch.tensor([0, 3], device=DEVICE))  # this signature is planned from here on
    for bad in (4, -1):
        with pytest.raises(IndexError):
            embedding(w, torch.tensor([0, bad], device=DEVICE))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("padding_idx", [-1, 2])
def test_embedding_dense_backward(dtype, padding_idx):
    idx = torch.tensor([[2, 5, 2], [0, 5, 5]], device=DEVICE)
    g = randn(2, 3, 7, dtype=dtype)
    got = kbwd(g, idx, 8, padding_idx, False)
    ref = reference(torch.ops.aten.embedding_dense_backward, g, idx, 8, padding_idx, False, out_dtype=dtype)
    assert got.dtype == dtype and got.shape == (8, 7)
    assert_close(got, ref)
    if padding_idx == 2:
        assert (got[2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [50, 500])  # more tokens than table rows, and fewer
def test_embedding_dense_backward_many_repeats_and_expanded_gradients(dtype, rows):
    # 300 tokens over 7 table rows: each row sums about 40 gradient rows in fp32 and is
    # rounded once; untouched rows stay exactly zero. The gradient of ``out.sum()``
    # arrives expanded (stride 0), and indices may be int32.
    idx = torch.randint(0, 7, (3, 100), device=DEVICE, dtype=torch.int32) * 7
    for g in (randn(3, 100, 33, dtype=dtype), randn(1, 1, 33, dtype=dtype).expand(3, 100, 33)):
        got = kbwd(g, idx, rows, 14, False)
        ref = reference(torch.ops.aten.embedding_dense_backward, g, idx.long(), rows, 14, False, out_dtype=dtype)
        assert_close(got, ref, scale=2)
        untouched = torch.ones(rows, dtype=torch.bool, device=DEVICE)
        untouched[idx.long().flatten()] = False
        assert (got[untouched] == 0).all() and (got[14] == 0).all()


def _index_patterns():
    # (name, indices, table rows): the backward groups the tokens by row and sums each
    # group in chunks of 8 grouped positions; groups cut by chunk edges (and groups that
    # span many chunks) add up through a spill buffer, keyed by table row when the table
    # has no more rows than there are chunks
    gen = torch.Generator().manual_seed(0)
    yield "one row for every token", torch.full((100,), 3), 5
    yield "16 tokens per row", torch.arange(8).repeat_interleave(16), 8
    yield "17 tokens per row, rows in decreasing order", torch.arange(9).repeat_interleave(17).flip(0), 40
    yield "few rows, many tokens", torch.randint(0, 3, (200,), generator=gen), 3
    yield "many rows, few repeats", torch.randint(0, 1000, (333,), generator=gen), 1000
    yield "one hot row among rare ones", torch.where(torch.rand(257, generator=gen) < 0.7, 11,
                                                     torch.randint(0, 64, (257,), generator=gen)), 64


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", list(range(6)))
def test_embedding_dense_backward_runs_across_chunk_edges(dtype, case):
    name, idx, rows = list(_index_patterns())[case]
    idx = idx.to(DEVICE)
    g = randn(idx.numel(), 40, dtype=dtype)
    for padding_idx in (-1, int(idx[0])):  # the padding row gets nothing, however many tokens it has
        got = kbwd(g, idx, rows, padding_idx, False)
        ref = reference(torch.ops.aten.embedding_dense_backward, g, idx, rows, padding_idx, False, out_dtype=dtype)
        assert_close(got, ref, scale=4, msg=f"{name}, padding_idx {padding_idx}")
        untouched = torch.ones(rows, dtype=torch.bool, device=DEVICE)
        untouched[idx] = False
        if padding_idx >= 0:
            untouched[padding_idx] = True
        assert (got[untouched] == 0).all(), name


def test_embedding_dense_backward_repeated_signatures_read_their_own_inputs():
    # from its second call on, a signature replays a plan: each call must read its own
    # gradient and indices, and get a fresh output; layouts the plan cannot read in place
    # (transposed indices, a gradient whose token rows need a copy) and other padding rows
    # must not share it
    outs = []
    for _ in range(3):
        for idx in (torch.randint(0, 9, (4, 6), device=DEVICE),
                    torch.randint(0, 9, (6, 4), device=DEVICE, dtype=torch.int32).t()):
            for g in (randn(4, 6, 5), randn(6, 4, 5).transpose(0, 1)):
                for padding_idx in (-1, 3):
                    got = kbwd(g, idx, 9, padding_idx, False)
                    ref = torch.ops.aten.embedding_dense_backward(g, idx.long(), 9, padding_idx, False)
                    assert_close(got, ref)
                    outs.append(got)
    assert len({t.data_ptr() for t in outs[-8:]}) == 8  # results still held are never shared


def test_embedding_backward_scale_grad_by_freq_native():
    idx = torch.tensor([1, 1, 3], device=DEVICE)
    g = randn(3, 4)
    got = embedding_dense_backward(g, idx, 5, -1, True)
    torch.testing.assert_close(got, torch.ops.aten.embedding_dense_backward(g, idx, 5, -1, True))


def test_embedding_autograd_through_enable(tmp_path):
    w = randn(9, 5).requires_grad_()
    idx = torch.tensor([[1, 8, 1]], device=DEVICE)
    log = tmp_path / "log"
    gemsops.only_enable(include=["embedding", "embedding_dense_backward"], record=True, path=log)
    out = torch.nn.functional.embedding(idx, w, padding_idx=8)
    out.sum().backward()
    gemsops.disable()
    w2 = w.detach().clone().requires_grad_()
    torch.nn.functional.embedding(idx, w2, padding_idx=8).sum().backward()
    torch.testing.assert_close(out, w2[idx])
    torch.testing.assert_close(w.grad, w2.grad)
    text = log.read_text()
    assert "aten::embedding\t" in text and "aten::embedding_dense_backward" in text


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_embedding_large():
    w = randn(128256, 4096, dtype=torch.bfloat16)
    idx = torch.randint(0, 128256, (4, 2048), device=DEVICE)
    torch.testing.assert_close(kemb(w, idx), w[idx], rtol=0, atol=0)
    g = randn(4, 2048, 4096, dtype=torch.bfloat16)
    ref = reference(torch.ops.aten.embedding_dense_backward, g, idx, 128256, -1, False, out_dtype=torch.bfloat16)
    assert_close(kbwd(g, idx, 128256, -1, False), ref)


def test_deterministic_mode_routes_atomic_paths_to_native():
    from gemsops.runtime import Unsupported
    idx = torch.tensor([1, 1, 3], device=DEVICE)
    g = randn(3, 4)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with pytest.raises(Unsupported):
            kbwd(g, idx, 5, -1, False)
        got = embedding_dense_backward(g, idx, 5, -1, False)
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(got, torch.ops.aten.embedding_dense_backward(g, idx, 5, -1, False))

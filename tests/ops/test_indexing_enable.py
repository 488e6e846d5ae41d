"""The indexing family under a global ``gemsops.enable()``: a small decoder-style flow
(embedding, positions, causal mask, rotate-half, dropout, sampling) agrees with native,
and the record log shows each op went through gems."""
import torch

import gemsops
from gemsops.runtime.oplog import read_log
from tests.util import DEVICE, assert_close, randn

OURS = {"embedding", "embedding_dense_backward", "arange.start", "full", "triu", "cat", "index.Tensor",
        "gather", "scatter.src", "topk", "sort.stable", "index_put_", "zeros", "native_dropout"}


def flow(w, ids, drop):
    seq = ids.shape[1]
    h = torch.nn.functional.embedding(ids, w)                                   # embedding
    pos = torch.arange(0, seq, device=DEVICE)                                   # arange.start
    mask = torch.full((seq, seq), float("-inf"), device=DEVICE).triu(1)        # full, triu
    half = h.shape[-1] // 2
    rot = torch.cat((-h[..., half:], h[..., :half]), dim=-1)                   # cat
    h = h + rot * pos[None, :, None] + mask.sum(-1).clamp(min=-1)[None, :, None]
    if drop:
        out, keep = torch.native_dropout(h, 0.25, True)                        # native_dropout
        h = out
    logits = h @ w.t()
    last = logits[torch.arange(ids.shape[0], device=DEVICE), seq - 1]          # index.Tensor
    picked = logits.gather(-1, ids[..., None])                                 # gather
    vals, idx = torch.topk(last, 3)                                             # topk
    svals, sidx = torch.sort(last[:, :16], descending=True)                    # sort.stable
    remove = (svals < svals[:, :1] - 1).scatter(1, sidx, svals < svals[:, :1] - 1)  # scatter.src
    buf = torch.zeros(ids.shape[0], 4, device=DEVICE)                           # zeros
    buf[:, torch.tensor([1, 3], device=DEVICE)] = vals[:, :2]                  # index_put_
    loss = picked.sum() + vals.sum() + buf.sum() + remove.sum()
    return loss, vals, idx, buf


def test_decoder_flow_under_enable(tmp_path):
    w = randn(32, 8)
    ids = torch.randint(0, 32, (2, 6), device=DEVICE)
    ref_w = w.clone().requires_grad_()
    ref_loss, ref_vals, ref_idx, ref_buf = flow(ref_w, ids, drop=False)
    ref_loss.backward()

    log = tmp_path / "ops.log"
    gemsops.enable(record=True, path=log)
    try:
        gw = w.clone().requires_grad_()
        loss, vals, idx, buf = flow(gw, ids, drop=False)
        loss.backward()
        torch.manual_seed(0)
        dl, _, _, _ = flow(w, ids, drop=True)
    finally:
        gemsops.disable()
    assert_close(loss, ref_loss, scale=10)
    assert_close(vals, ref_vals, scale=10)
    assert_close(buf, ref_buf, scale=10)
    assert_close(gw.grad, ref_w.grad, scale=10)
    assert torch.isfinite(dl)
    served = {op.removeprefix("aten::") for _, op, _ in read_log(log)}
    assert OURS <= served, sorted(OURS - served)

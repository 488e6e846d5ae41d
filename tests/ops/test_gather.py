import pytest
import torch

import gemsops
from gemsops.ops.gather import gather, gather_out
from tests.util import DEVICE, FLOAT_DTYPES, ON_GPU, randn

kgather, kgather_out = gather.__wrapped__, gather_out.__wrapped__


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [torch.int32, torch.bool])
@pytest.mark.parametrize("shape,dim", [((5,), 0), ((4, 6), 1), ((4, 6), 0), ((2, 3, 5), -1), ((2, 3, 4, 5), 2)])
def test_gather(dtype, shape, dim):
    x = randn(*shape).to(dtype)
    ishape = list(shape)
    ishape[dim] = 7
    ishape[0] = max(1, ishape[0] - 1) if (dim % len(shape)) != 0 else ishape[0]
    idx = torch.randint(0, shape[dim], ishape, device=DEVICE)
    torch.testing.assert_close(kgather(x, dim, idx), torch.gather(x, dim, idx), rtol=0, atol=0)


def test_gather_noncontiguous_empty_out():
    x = randn(6, 5).t()  # (5, 6)
    idx = torch.randint(0, 5, (6, 4), device=DEVICE).t()  # (4, 6) non-contiguous
    torch.testing.assert_close(kgather(x, 0, idx), torch.gather(x, 0, idx), rtol=0, atol=0)
    e = torch.empty(0, 3, dtype=torch.long, device=DEVICE)
    assert kgather(x, 1, e).shape == (0, 3)
    out = torch.empty(4, 6, device=DEVICE)
    kgather_out(x, 0, idx, out=out)
    torch.testing.assert_close(out, torch.gather(x, 0, idx), rtol=0, atol=0)


def test_gather_native_routes():
    x = randn(3, 4)
    i32 = torch.tensor([[0, 2]], dtype=torch.int32, device=DEVICE)
    torch.testing.assert_close(gather(x, 1, i32), torch.gather(x, 1, i32.long()))
    with pytest.raises(RuntimeError):
        gather(x, 1, torch.zeros(4, 5, dtype=torch.long, device=DEVICE))  # index larger than self
    if not ON_GPU:
        with pytest.raises(RuntimeError):
            gather(x, 1, torch.tensor([[4]], device=DEVICE))
        with pytest.raises(RuntimeError):
            gather(x, 1, torch.tensor([[-1]], device=DEVICE))
    x0 = torch.tensor(3.0, device=DEVICE)
    torch.testing.assert_close(gather(x0, 0, torch.tensor(0, device=DEVICE)), x0)


def test_gather_through_enable(tmp_path):
    logits = randn(3, 8)
    labels = torch.tensor([[1], [7], [0]], device=DEVICE)
    log = tmp_path / "log"
    gemsops.only_enable(include=["gather"], record=True, path=log)
    r = logits.gather(-1, labels)
    gemsops.disable()
    torch.testing.assert_close(r, logits[torch.arange(3), labels[:, 0]][:, None])
    assert "aten::gather" in log.read_text()


@pytest.mark.skipif(not ON_GPU, reason="large shapes on GPU only")
@pytest.mark.big_memory
def test_gather_large():
    x = randn(8, 4096, 32000, dtype=torch.bfloat16)
    idx = torch.randint(0, 32000, (8, 4096, 1), device=DEVICE)
    torch.testing.assert_close(kgather(x, -1, idx), torch.gather(x, -1, idx), rtol=0, atol=0)

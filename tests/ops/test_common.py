"""Helpers shared by op files: output allocation for planned calls."""
import torch

from gemsops.ops._common import allocation_stand_in, planned_output


class _OnOtherGpu(torch.Tensor):
    """A CPU tensor that reports another device, as a tensor on a second GPU would."""

    def get_device(self):
        return 1


def test_a_stand_in_allocates_like_its_tensor():
    for t in [torch.randn(3, 5, dtype=torch.bfloat16), torch.randn(()), torch.zeros(4, 1, 2, dtype=torch.int64)]:
        like = allocation_stand_in(t)
        assert like.untyped_storage().nbytes() == t.element_size()  # one element, not a copy of t
        out = torch.empty_like(like)
        assert (out.shape, out.stride(), out.dtype, out.device) == (t.shape, t.stride(), t.dtype, t.device)
    # nothing to stand in for: empty tensors, strides other than the default ones
    assert allocation_stand_in(torch.empty(0, 3)) is None
    assert allocation_stand_in(torch.randn(3, 5).t()) is None


def test_planned_outputs_use_the_stand_in_only_on_its_device():
    x = torch.randn(2, 3)
    like = allocation_stand_in(torch.empty(2, 3, dtype=torch.float16))
    out = planned_output(like, (2, 3), (3, 1), torch.float16, x)
    assert (out.shape, out.stride(), out.dtype) == ((2, 3), (3, 1), torch.float16)
    # no stand-in (a transposed output): the plan's shape and strides
    out = planned_output(None, (2, 3), (1, 2), torch.float16, x)
    assert (out.shape, out.stride(), out.dtype) == ((2, 3), (1, 2), torch.float16)
    # the call's tensors are on another device than the plan's stand-in: allocated there
    elsewhere = torch.randn(2, 3).as_subclass(_OnOtherGpu)
    calls = []
    real = torch.empty_strided

    def empty_strided(*args, **kwargs):
        calls.append(kwargs["device"])
        return real(*args, **kwargs)

    torch.empty_strided = empty_strided
    try:
        planned_output(like, (2, 3), (3, 1), torch.float16, elsewhere)
    finally:
        torch.empty_strided = real
    assert calls == [elsewhere.device]

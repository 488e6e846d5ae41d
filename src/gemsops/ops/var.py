"""var / std / var_mean / std_mean with ``correction`` and keepdim, in two passes (mean, then
the sum of squared deviations from it), which stays accurate when the mean dwarfs the spread."""
import torch
import triton  # noqa: F401
import triton.language as tl  # noqa: F401  (the interpreter needs it visible to every jit function)

from ..runtime import Unsupported, declare, with_fallback
from ._reduction import DIV, DIV_SQRT, SQDIFF, SUM, acc_dtype, check_input, launch_reduce, normalize_dims, plan, source

__all__ = ["var", "std", "var_mean", "std_mean"]


def _moments(self, dim, correction, keepdim, sqrt):
    check_input(self)
    if not self.dtype.is_floating_point:
        raise Unsupported  # torch: var/std only support floating point and complex
    g = plan(self, normalize_dims(self.dim(), dim), keepdim)
    acc = acc_dtype(self.dtype)
    res = torch.empty(g.out_shape, dtype=self.dtype, device=self.device)
    mean = torch.empty(g.out_shape, dtype=acc, device=self.device)
    if res.numel() == 0:
        return res, mean.to(self.dtype)
    src = source(self, g)
    launch_reduce(src, g, mean, op=SUM, acc=acc, post=DIV, div=g.R)
    # torch divides by max(0, N - correction): N <= correction gives inf or nan
    div = max(0, g.R - (1 if correction is None else correction))
    if float(div).is_integer():
        div = int(div)  # an int argument keeps fp64 exact (Triton passes Python floats as fp32)
    launch_reduce(src, g, res, op=SUM, acc=acc, pre=SQDIFF, post=DIV_SQRT if sqrt else DIV, div=div,
                  center=mean)
    return res, mean


@with_fallback("var.correction")
def var(self, dim=None, *, correction=None, keepdim=False):
    """torch.var(self, dim, correction=correction, keepdim=keepdim)."""
    return _moments(self, dim, correction, keepdim, False)[0]


@with_fallback("std.correction")
def std(self, dim=None, *, correction=None, keepdim=False):
    """torch.std(self, dim, correction=correction, keepdim=keepdim)."""
    return _moments(self, dim, correction, keepdim, True)[0]


def _with_mean(self, dim, correction, keepdim, sqrt):
    res, mean = _moments(self, dim, correction, keepdim, sqrt)
    return res, mean if mean.dtype == self.dtype else mean.to(self.dtype)


@with_fallback("var_mean.correction")
def var_mean(self, dim=None, *, correction=None, keepdim=False):
    """torch.var_mean(self, dim, correction=correction, keepdim=keepdim)."""
    return _with_mean(self, dim, correction, keepdim, False)


@with_fallback("std_mean.correction")
def std_mean(self, dim=None, *, correction=None, keepdim=False):
    """torch.std_mean(self, dim, correction=correction, keepdim=keepdim)."""
    return _with_mean(self, dim, correction, keepdim, True)


declare("var", {"var.correction": var})
declare("std", {"std.correction": std})
declare("var_mean", {"var_mean.correction": var_mean})
declare("std_mean", {"std_mean.correction": std_mean})

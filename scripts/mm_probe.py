"""Quick GPU probe: mm/addmm timings against cuBLAS on LLM shapes (used before the full suite lands)."""
import torch
import triton

import gemsops

shapes = [(8192, 8192, 8192), (4096, 14336, 4096), (4096, 4096, 4096), (16, 4096, 4096), (1, 4096, 4096),
          (128, 4096, 4096), (16, 14336, 4096), (1, 4096, 14336)]
rows = []
for dtype in (torch.bfloat16,):
    for m, n, k in shapes:
        a = torch.randn(m, k, device="cuda", dtype=dtype)
        w = torch.randn(n, k, device="cuda", dtype=dtype)  # nn.Linear layout: mm(x, W.t())
        ref = torch.mm(a, w.t())
        out = gemsops.ops.mm(a, w.t())
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        t_native = triton.testing.do_bench(lambda: torch.mm(a, w.t()), warmup=25, rep=100, return_mode="median")
        t_gems = triton.testing.do_bench(lambda: gemsops.ops.mm(a, w.t()), warmup=25, rep=100, return_mode="median")
        tf = 2 * m * n * k / 1e12
        rows.append(f"| {m}x{n}x{k} {str(dtype)[6:]} | {t_native*1e3:.1f} us ({tf/t_native*1e3:.0f} TF/s) | "
                    f"{t_gems*1e3:.1f} us ({tf/t_gems*1e3:.0f} TF/s) | {t_native/t_gems:.2f}x | relerr {err:.1e} |")
print("| shape | cuBLAS | gems | speedup | |")
print("\n".join(rows))
print("benchmarks run by tuner:", gemsops.runtime.tuner.stats.benchmarks_run)

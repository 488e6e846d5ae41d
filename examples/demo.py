"""Run a small Llama-style model with and without gems; show which ops gems served.

    make demo            # or: python examples/demo.py

On a machine without a GPU this runs every kernel through Triton's interpreter on CPU
tensors (tiny shapes, a minute or so); on a GPU it uses a bigger bf16 model.
"""
import os
import sys
import tempfile
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("GEMS_VENDOR", "interpreter")  # before gemsops defines its kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import gemsops  # noqa: E402
from gemsops.runtime.oplog import summarize  # noqa: E402
from tiny_llama import LlamaConfig, TinyLlama  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    device = gemsops.VENDOR.device_type
    if device == "cuda":
        cfg, dtype, batch, seq = LlamaConfig(vocab=32000, hidden=2048, intermediate=8192, layers=2,
                                             heads=32, kv_heads=8), torch.bfloat16, 4, 512
    else:
        cfg, dtype, batch, seq = LlamaConfig(), torch.float32, 2, 8
    model = TinyLlama(cfg).to(device=device, dtype=dtype).eval()
    tokens = torch.randint(0, cfg.vocab, (batch, seq), device=device)
    print(f"gemsops {gemsops.__version__}, vendor {gemsops.vendor_name}, device {gemsops.VENDOR.device_name}, "
          f"model: {cfg.layers} layers, hidden {cfg.hidden}, {dtype}, tokens {batch}x{seq}")

    with torch.no_grad():
        native = model(tokens)
        log = Path(tempfile.mkdtemp()) / "gems_oplog.txt"
        with gemsops.use_gems(record=True, path=log):
            gems = model(tokens)

    print("\naten ops served by gems in the forward pass (calls):")
    print(summarize(log))
    diff = (gems.float() - native.float()).abs().max().item()
    scale = native.float().abs().max().item()
    print(f"\nmax |gems - native| = {diff:.3e} (max |logit| = {scale:.3e})")
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    if not diff <= tol * max(scale, 1.0):
        raise SystemExit(f"gems and native disagree beyond {tol} relative")
    print("gems and native agree.")


if __name__ == "__main__":
    main()

"""Vendor selection: which dispatch key gems registers for and which kernel configs it uses.

A vendor is data: ``vendors/<name>/vendor.yaml`` (dispatch key, device type, dtypes,
quirks) plus kernel configs in ``vendors/<name>/configs/default/*.yaml`` and optional
per-architecture overlays such as ``configs/hopper/*.yaml`` (one file per op family). ``GEMS_VENDOR`` picks one; when unset, a visible
CUDA device selects ``nvidia`` and otherwise no vendor is active (gems stays off).

This module must be imported before any ``@triton.jit`` function is defined: the
interpreter vendor sets ``TRITON_INTERPRET=1``, which Triton reads at decoration time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

VENDORS_DIR = Path(__file__).resolve().parent.parent / "vendors"


class VendorError(ValueError):
    """A bad ``GEMS_VENDOR`` value or a vendor that cannot run on this machine."""


@dataclass(frozen=True)
class Vendor:
    name: str
    device_type: str  # torch device type the kernels run on: "cuda" or "cpu"
    dispatch_key: str  # torch dispatch key gems registers its kernels for
    interpreter: bool
    dtypes: frozenset  # torch dtypes the kernels accept
    quirks: frozenset
    arch: str  # architecture overlay in use ("hopper", "default", ...)
    device_name: str
    configs: dict = field(default_factory=dict, repr=False)

    def config(self, kernel: str) -> dict:
        """Config block for ``kernel`` from the vendor YAML (empty dict if none)."""
        return self.configs.get(kernel, {})

    def has_quirk(self, quirk: str) -> bool:
        return quirk in self.quirks


def available_vendors() -> list[str]:
    return sorted(p.parent.name for p in VENDORS_DIR.glob("*/vendor.yaml"))


def _load_yaml(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _load_configs(folder: Path) -> dict:
    """Kernel name -> config block, from every YAML file of one architecture folder."""
    configs: dict = {}
    for path in sorted(folder.glob("*.yaml")):
        configs.update(_load_yaml(path))
    return configs


def _dtype_set(names) -> frozenset:
    import torch

    return frozenset(getattr(torch, n) for n in names)


def load_vendor(name: str) -> Vendor:
    """Read the descriptor and configs of vendor ``name`` (does not check the hardware)."""
    if name not in available_vendors():
        raise VendorError(
            f"GEMS_VENDOR={name!r} is not a known vendor; valid names: "
            + ", ".join(available_vendors())
        )
    root = VENDORS_DIR / name
    desc = _load_yaml(root / "vendor.yaml")
    arch, device_name = "default", "cpu"
    if desc["device_type"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise VendorError(f"GEMS_VENDOR={name!r} needs a CUDA device, and none is visible")
        major, _ = torch.cuda.get_device_capability()
        arch = desc.get("architectures", {}).get(str(major), "default")
        device_name = torch.cuda.get_device_name()
    elif desc.get("interpreter"):
        device_name = "cpu-interpreter"
    configs = _load_configs(root / "configs" / "default")
    if arch != "default":
        # an architecture overlay replaces whole kernel entries, never merges inside one,
        # so a tuned candidate list is never mixed with another chip's defaults
        configs.update(_load_configs(root / "configs" / arch))
    return Vendor(
        name=desc["name"],
        device_type=desc["device_type"],
        dispatch_key=desc["dispatch_key"],
        interpreter=bool(desc.get("interpreter", False)),
        dtypes=_dtype_set(desc.get("dtypes", [])),
        quirks=frozenset(desc.get("quirks", [])),
        arch=arch,
        device_name=device_name,
        configs=configs,
    )


def select_vendor() -> Vendor | None:
    """The vendor named by ``GEMS_VENDOR``, else auto-detected; None when no backend fits."""
    name = os.environ.get("GEMS_VENDOR", "").strip()
    if name:
        if name not in available_vendors():
            raise VendorError(
                f"GEMS_VENDOR={name!r} is not a known vendor; valid names: "
                + ", ".join(available_vendors())
            )
        if name == "interpreter" or _load_yaml(VENDORS_DIR / name / "vendor.yaml").get("interpreter"):
            # before triton.jit runs anywhere in gemsops
            os.environ["TRITON_INTERPRET"] = "1"
        return load_vendor(name)
    import torch

    if torch.cuda.is_available() and torch.version.cuda:
        return load_vendor("nvidia")
    return None


VENDOR: Vendor | None = select_vendor()
vendor_name: str | None = VENDOR.name if VENDOR else None

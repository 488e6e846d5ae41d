"""Vendor selection by GEMS_VENDOR and auto-detection; vendors are data."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import gemsops
from gemsops.runtime import vendor

ROOT = Path(__file__).resolve().parents[2]


def run_python(code, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("GEMS_VENDOR", "TRITON_INTERPRET")}
    env.update(PYTHONPATH=str(ROOT / "src"), **env_overrides)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_unknown_vendor_is_a_clear_error_listing_valid_names():
    res = run_python("import gemsops", GEMS_VENDOR="amdd")
    assert res.returncode != 0
    assert "GEMS_VENDOR='amdd' is not a known vendor; valid names: interpreter, nvidia" in res.stderr


@pytest.mark.skipif(gemsops.VENDOR.device_type == "cuda", reason="checks the no-GPU behaviour")
def test_no_gpu_and_no_vendor_enable_warns_and_changes_nothing():
    code = (
        "import warnings, torch, gemsops\n"
        "before = torch._C._dispatch_dump('aten::add.Tensor')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    gemsops.enable()\n"
        "print(gemsops.vendor_name, len(w), 'no GPU is visible' in str(w[0].message))\n"
        "print(torch._C._dispatch_dump('aten::add.Tensor') == before, gemsops.all_registered_ops())\n"
        "a = torch.ones(3); print(gemsops.ops.add(a, a).tolist())\n"
    )
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:3] == ["None 1 True", "True []", "[2.0, 2.0, 2.0]"]


@pytest.mark.skipif(gemsops.VENDOR.device_type == "cuda", reason="checks the no-GPU behaviour")
def test_nvidia_without_gpu_is_a_clear_error():
    res = run_python("import gemsops", GEMS_VENDOR="nvidia")
    assert res.returncode != 0 and "needs a CUDA device, and none is visible" in res.stderr


def test_interpreter_vendor_sets_up_triton_interpreter():
    res = run_python("import os, gemsops; print(gemsops.vendor_name, os.environ['TRITON_INTERPRET'])",
                     GEMS_VENDOR="interpreter")
    assert res.stdout.strip() == "interpreter 1"


def test_vendor_descriptors_and_configs_are_well_formed():
    assert vendor.available_vendors() == ["interpreter", "nvidia"]
    for name in vendor.available_vendors():
        root = vendor.VENDORS_DIR / name
        desc = yaml.safe_load((root / "vendor.yaml").read_text())
        assert {"name", "device_type", "dispatch_key", "dtypes"} <= desc.keys()
        for path in root.glob("configs/*/*.yaml"):
            for kernel, block in (yaml.safe_load(path.read_text()) or {}).items():
                assert "default" in block or "candidates" in block, f"{path}: {kernel}"


def test_arch_overlay_replaces_whole_entries(tmp_path):
    (tmp_path / "default").mkdir()
    (tmp_path / "hopper").mkdir()
    (tmp_path / "default" / "a.yaml").write_text("k1: {default: {B: 1}}\nk2: {default: {B: 2}}\n")
    (tmp_path / "hopper" / "a.yaml").write_text("k2: {candidates: [{B: 4}]}\n")
    configs = vendor._load_configs(tmp_path / "default")
    configs.update(vendor._load_configs(tmp_path / "hopper"))
    assert configs == {"k1": {"default": {"B": 1}}, "k2": {"candidates": [{"B": 4}]}}


def test_vendor_name_exposed():
    assert gemsops.vendor_name == gemsops.VENDOR.name

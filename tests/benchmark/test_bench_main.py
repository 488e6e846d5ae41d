"""The command line: argument defaults, --list without a GPU, and the no-GPU exit."""
import torch

from benchmark import __main__ as cli


def test_defaults():
    args = cli.parse_args([])
    assert args.ops == "all" and not args.quick and not args.enable and args.out == "bench_out"
    assert not args.serial_peer_compile and cli.parse_args(["--serial-peer-compile"]).serial_peer_compile
    only_host = cli.parse_args(["--host-overhead"])
    assert only_host.ops is None and only_host.host_overhead
    both = cli.parse_args(["--e2e", "--ops", "norm"])
    assert both.ops == "norm" and both.e2e


def test_list_needs_no_gpu(capsys):
    assert cli.main(["--list", "--quick", "--ops", "fused"]) == 0
    out = capsys.readouterr().out
    assert "fused_add_rms_norm/16384x8192/bf16" in out and out.strip().endswith("12 cases")


def test_without_gpu_says_so_and_fails(capsys):
    if torch.cuda.is_available():
        return  # the GPU run covers the real path
    assert cli.main(["--ops", "add", "--quick"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err

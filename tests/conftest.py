"""Test setup: pick the vendor before gemsops is imported, and reset gems after each test.

CI has no GPU: it runs every test through the interpreter vendor on CPU tensors
(``GEMS_VENDOR=interpreter``). On a GPU machine ``GEMS_VENDOR=nvidia`` runs the same tests
on CUDA with larger shapes where a test asks for ``big``.
"""
import os

import pytest

if "GEMS_VENDOR" not in os.environ:
    import torch

    os.environ["GEMS_VENDOR"] = "nvidia" if torch.cuda.is_available() else "interpreter"

import gemsops  # noqa: E402


def pytest_collection_modifyitems(config, items):
    # with several workers sharing one GPU (``-n 4 --dist loadgroup``), two tests of several
    # GiB each at once can run it out of memory: they share one group, which one worker runs
    # in sequence (the GPU check itself runs them after the others, alone)
    for item in items:
        if item.get_closest_marker("big_memory"):
            item.add_marker(pytest.mark.xdist_group("big_memory"))


@pytest.fixture(autouse=True)
def _gems_off_after_test():
    yield
    gemsops.disable()


@pytest.fixture
def device():
    return gemsops.VENDOR.device_type


def pytest_terminal_summary(terminalreporter):
    """Print the OpInfo agreement counts (ops, samples, agreed, routed to native, failed)."""
    from tests.opinfo_harness import terminal_summary

    terminal_summary(terminalreporter)


def pytest_runtest_logreport(report):
    # GEMS_TEST_FAILURES=path: each failure's traceback is appended as soon as it happens, so a
    # run cut off by a time limit (the GPU check) still shows why tests failed
    path = os.environ.get("GEMS_TEST_FAILURES")
    if path and report.failed:
        with open(path, "a") as f:
            f.write(f"===== {report.nodeid} ({report.when})\n{report.longreprtext}\n")

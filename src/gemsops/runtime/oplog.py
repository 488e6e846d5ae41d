"""``record=True`` op logging: one line per gems op call, appended to a text file.

Line format (tab separated): seconds since enabling, aten overload, arguments, where a
tensor argument is written ``dtype[d0, d1, ...]``. ``python -m gemsops log-summary FILE``
counts lines per op; ``examples/pretune.py --from-log FILE`` reads the shapes back.
"""
from __future__ import annotations

import collections
import os
import threading
import time
import warnings
from pathlib import Path

import torch

DEFAULT_PATH = "gems_oplog.txt"

_DTYPE_NAMES = {
    torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
    torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8",
    torch.uint8: "u8", torch.bool: "bool",
}
_DTYPES_BY_NAME = {v: k for k, v in _DTYPE_NAMES.items()}


def describe(arg) -> str:
    if isinstance(arg, torch.Tensor):
        return f"{_DTYPE_NAMES.get(arg.dtype, str(arg.dtype))}{list(arg.shape)}"
    if isinstance(arg, (list, tuple)) and any(isinstance(a, torch.Tensor) for a in arg):
        return "(" + ", ".join(describe(a) for a in arg) + ")"
    return repr(arg)


def dtype_from_name(name: str) -> torch.dtype:
    return _DTYPES_BY_NAME.get(name) or getattr(torch, name.removeprefix("torch."))


def _open_append(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", buffering=1)


class OpRecorder:
    """Appends one line per recorded call. Never raises into the model's code."""

    def __init__(self, path: str | os.PathLike | None = None, once: bool = False):
        wanted = Path(path) if path else Path(DEFAULT_PATH)
        try:
            self.file = _open_append(wanted)
            self.path = wanted
        except OSError as err:
            fallback = Path.cwd() / (wanted.name or DEFAULT_PATH)
            warnings.warn(
                f"gemsops: cannot write the op log at {str(wanted)!r} ({err.strerror}); "
                f"logging to {str(fallback)!r} instead",
                stacklevel=4,
            )
            try:
                self.file = _open_append(fallback)
                self.path = fallback
            except OSError as err2:
                warnings.warn(f"gemsops: op logging disabled, {fallback} is not writable either ({err2.strerror})")
                self.file, self.path = None, None
        self.once = once
        self.seen: set = set()
        self.start = time.perf_counter()
        self.lock = threading.Lock()

    def log(self, overload: str, args, kwargs) -> None:
        if self.file is None:
            return
        if self.once:
            key = (overload, tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))
            if key in self.seen:
                return
            self.seen.add(key)
        parts = [describe(a) for a in args]
        parts += [f"{k}={describe(v)}" for k, v in kwargs.items()]
        line = f"{time.perf_counter() - self.start:.6f}\taten::{overload}\t{', '.join(parts)}\n"
        with self.lock:
            try:
                self.file.write(line)
            except (OSError, ValueError):  # disk full, file closed under us
                self.file = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_log(path) -> list[tuple[float, str, str]]:
    """(seconds, overload, argument text) for every well-formed line of a log file."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                continue
            try:
                rows.append((float(parts[0]), parts[1], parts[2]))
            except ValueError:
                continue
    return rows


def summarize(path) -> str:
    counts = collections.Counter(op for _, op, _ in read_log(path))
    total = sum(counts.values())
    width = max((len(op) for op in counts), default=10)
    lines = [f"{op:<{width}}  {n:>8}" for op, n in counts.most_common()]
    lines.append(f"{'total':<{width}}  {total:>8}  ({len(counts)} ops)")
    return "\n".join(lines)

"""Running :mod:`bench.child` interpreters and collecting what they measured.

The child's stdout and stderr go to files, not pipes: the parent then spends no CPU (and no GIL time
that the in-process moto server needs) while a child runs, and the logs are there when a child fails.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # `python -m bench.child` needs the repo on sys.path
_counter = itertools.count()


class BenchError(RuntimeError):
    """The benchmark itself broke (not a missed target)."""


@dataclass(frozen=True)
class ChildRun:
    result: dict[str, Any]
    spawned_ns: int
    exited_ns: int

    @property
    def wall_ms(self) -> float:
        return (self.exited_ns - self.spawned_ns) / 1e6

    def since_spawn_ms(self, stamp: str) -> float:
        """Milliseconds from the parent's spawn to the child's ``stamp`` (one system-wide monotonic clock)."""
        return (int(self.result[stamp]) - self.spawned_ns) / 1e6

    def between_ms(self, start: str, end: str) -> float:
        return (int(self.result[end]) - int(self.result[start])) / 1e6


def child_env(function_env: dict[str, str]) -> dict[str, str]:
    """The parent's environment (PATH, locale) overlaid with the function's, as Lambda's runtime sets it."""
    return {**os.environ, **function_env}


def run_child(
    kind: str, args: list[str], env: dict[str, str], workdir: Path, timeout: float, flags: tuple[str, ...] = ()
) -> ChildRun:
    """``flags``: interpreter options (``-S``: no site-packages, only what PYTHONPATH names - an artifact)."""
    n = next(_counter)
    result, out, err = (workdir / f"{n:03d}-{kind}.{ext}" for ext in ("json", "stdout", "stderr"))
    cmd = [sys.executable, *flags, "-m", "bench.child", kind, str(result), *args]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        spawned = time.monotonic_ns()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BenchError(f"child {kind!r} did not finish within {timeout:.0f} s") from None
        exited = time.monotonic_ns()
    if proc.returncode != 0 or not result.exists():
        tail = err.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise BenchError(f"child {kind!r} failed (exit {proc.returncode}):\n{tail}")
    data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return ChildRun(data, spawned, exited)

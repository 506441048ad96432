"""Starting and stopping the twin process from the CLI (and from `make drill` / `make invoke`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tandem.template import ROOT
from tandem.twin.control import STATE_FILE, TwinNotRunning, call, cleanup_after_crash, read_state


def is_running(state_dir: Path) -> bool:
    try:
        call(state_dir, "GET", "/status", timeout=5)
    except (TwinNotRunning, RuntimeError):
        return False
    return True


def start(state_dir: Path, *, scale: float = 1.0, primary: str = "us-east-1", dr: str = "us-west-2",
          timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
    """Start a detached twin and wait until it is provisioned; returns its status."""
    if is_running(state_dir):
        raise RuntimeError(f"a twin is already running (state in {state_dir}); `tandem twin down` stops it")
    cleanup_after_crash(state_dir)  # a twin that died without cleaning up
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "twin.log"
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tandem.twin.daemon", "--state-dir", str(state_dir), "--scale", str(scale),
             "--primary", primary, "--dr", dr],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-1500:]
            raise RuntimeError(f"the twin failed to start (exit {proc.returncode}); log {log_path}:\n{tail}")
        if (state_dir / STATE_FILE).exists():
            with contextlib.suppress(TwinNotRunning):
                read_state(state_dir)
                return call(state_dir, "GET", "/status")
        time.sleep(0.05)
    proc.kill()
    cleanup_after_crash(state_dir)
    raise RuntimeError(f"the twin was not ready within {timeout:.0f} s; see {log_path}")


def stop(state_dir: Path, timeout: float = 30.0) -> None:
    """Ask the twin to go down and wait until it has cleaned up; clean up by force if it doesn't answer."""
    try:
        pid = read_state(state_dir).get("pid")
        call(state_dir, "POST", "/down", timeout=10)
    except TwinNotRunning:
        cleanup_after_crash(state_dir)
        raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (state_dir / STATE_FILE).exists():
        time.sleep(0.05)
    if (state_dir / STATE_FILE).exists():
        cleanup_after_crash(state_dir)
    _wait_gone(pid, deadline)


def _wait_gone(pid: object, deadline: float) -> None:
    if not isinstance(pid, int):
        return
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it (else it stays a zombie)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@contextlib.contextmanager
def ensure_running(state_dir: Path, **kwargs: Any) -> Iterator[bool]:
    """Use the running twin, or start one for the block and stop it afterwards. Yields 'started by us'."""
    if is_running(state_dir):
        yield False
        return
    start(state_dir, **kwargs)
    try:
        yield True
    finally:
        with contextlib.suppress(TwinNotRunning):
            stop(state_dir)

"""Starting and stopping the twin process from the CLI (and from `make drill` / `make invoke`).

Ownership rules live in :mod:`tandem.twin.ownership`: the twin lock decides who may start a twin and what
counts as debris; a process is signalled only when it is provably this state directory's daemon.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tandem.template import ROOT
from tandem.twin.control import STATE_FILE, TwinNotRunning, call, read_state
from tandem.twin.ownership import TWIN_LOCK, USERS_LOCK, FileLock, is_our_daemon, remove_postgres_trees


class TwinBusy(RuntimeError):
    """Another twin owns the state directory (running, starting or stopping)."""


def is_running(state_dir: Path) -> bool:
    try:
        call(state_dir, "GET", "/status", timeout=5)
    except (TwinNotRunning, RuntimeError):
        return False
    return True


def cleanup_after_crash(state_dir: Path) -> list[str]:
    """Remove what a dead twin left behind (PostgreSQL servers and trees, the state file); says what it did.

    Callers hold the twin lock, so no twin is alive and nothing found here belongs to a running one.
    """
    done = remove_postgres_trees(state_dir)
    state = state_dir / STATE_FILE
    if state.exists():
        state.unlink()
        done.append(f"removed the stale {state}")
    return done


def start(state_dir: Path, *, scale: float = 1.0, primary: str = "us-east-1", dr: str = "us-west-2",
          ephemeral: bool = False, timeout: float = 90.0,
          templates: tuple[Path, Path] | None = None,
          parameter_overrides: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Start a detached twin and wait until it is provisioned; returns its status.

    ``ephemeral`` marks a twin started only for a drill or an invoke: the last such user stops it.
    ``templates`` (global, app) replace the repository's templates (tests deploy edited copies).
    ``parameter_overrides`` are given to both app stacks, as ``sam deploy --parameter-overrides`` would.
    Whatever ends the wait early (start-up failure, timeout, Ctrl-C, SIGTERM) stops the daemon and removes
    what it created before the exception goes on.
    """
    lock = FileLock(state_dir / TWIN_LOCK)
    if not lock.acquire():
        lock.close()
        raise TwinBusy(_busy(state_dir))
    try:
        cleanup_after_crash(state_dir)  # we hold the lock: nothing alive owns what is left here
        log_path = state_dir / "twin.log"
        assert lock.fd is not None
        command = [
            sys.executable, "-m", "tandem.twin.daemon", "--state-dir", str(state_dir.resolve()), "--scale", repr(scale),
            "--primary", primary, "--dr", dr, "--lock-fd", str(lock.fd), *(["--ephemeral"] if ephemeral else []),
            *(["--templates", *map(str, templates)] if templates else []),
            *(["--parameter-overrides", *(f"{k}={v}" for k, v in parameter_overrides.items())]
              if parameter_overrides else []),
        ]  # fmt: skip
        with open(log_path, "a", encoding="utf-8") as log:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT, start_new_session=True,
                pass_fds=(lock.fd,),
            )  # fmt: skip
        lock.record_holder(proc.pid)
    finally:
        lock.close()  # from here on the daemon alone holds the lock (it inherited the descriptor)
    try:
        return _wait_ready(proc, state_dir, log_path, timeout)
    except BaseException as exc:
        _note(state_dir, f"pid {os.getpid()} stops the starting daemon: {type(exc).__name__}: {exc}")
        _abort(proc, state_dir)
        raise


def _wait_ready(proc: subprocess.Popen[bytes], state_dir: Path, log_path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the twin failed to start (exit {proc.returncode}): {_last_error(log_path)}")
        if (state_dir / STATE_FILE).exists():
            with contextlib.suppress(TwinNotRunning):
                read_state(state_dir)
                return call(state_dir, "GET", "/status")
        time.sleep(0.05)
    raise RuntimeError(f"the twin was not ready within {timeout:.0f} s; see {log_path}")


def _last_error(log_path: Path) -> str:
    """The daemon's last error line (it logs one clear line per start-up failure) or, without one, how its
    log ends (a start-up abandoned on a signal says so, and who sent it is noted above), with the path."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.exists() else []
    errors = [line for line in lines if " ERROR " in line]
    shown = errors[-1:] or [line for line in lines if "abandoned" in line or line.startswith("tandem twin:")][-3:]
    return f"{' | '.join(shown or lines[-3:] or ['no output'])} (log: {log_path})"


def _note(state_dir: Path, text: str) -> None:
    """A line in the daemon's log from outside it: who signalled it, and why (the daemon cannot tell)."""
    with contextlib.suppress(OSError), open(state_dir / "twin.log", "a", encoding="utf-8") as log:
        log.write(f"tandem twin: {text}\n")


def _abort(proc: subprocess.Popen[bytes], state_dir: Path) -> None:
    """Stop a daemon we spawned that never became ready, then remove whatever it created."""
    if proc.poll() is None:
        proc.terminate()  # its SIGTERM handler abandons start-up and cleans up
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    lock = FileLock(state_dir / TWIN_LOCK)
    try:
        if lock.acquire():
            cleanup_after_crash(state_dir)
    finally:
        lock.close()


def stop(state_dir: Path, timeout: float = 30.0) -> None:
    """Ask the twin to go down and wait until it has cleaned up; stop it by force if it does not answer.

    With no twin alive, what a dead one left behind is removed and TwinNotRunning is raised.
    """
    lock = FileLock(state_dir / TWIN_LOCK)
    try:
        if lock.acquire():  # free: no twin is alive here
            done = cleanup_after_crash(state_dir)
            raise TwinNotRunning("cleaned up after one that died" if done else "")
    finally:
        lock.close()
    try:
        call(state_dir, "POST", "/down", timeout=10)
    except (TwinNotRunning, RuntimeError):
        _signal_daemon(state_dir, signal.SIGTERM)  # still starting (no control API yet), or not answering
    if not _wait_lock_free(state_dir, time.monotonic() + timeout):
        _signal_daemon(state_dir, signal.SIGKILL)
        if not _wait_lock_free(state_dir, time.monotonic() + 10):
            raise RuntimeError(f"the twin in {state_dir} did not stop")
    lock = FileLock(state_dir / TWIN_LOCK)
    try:
        if lock.acquire():
            cleanup_after_crash(state_dir)  # normally nothing: the daemon removes what it created
    finally:
        lock.close()


def _signal_daemon(state_dir: Path, sig: signal.Signals) -> None:
    """Signal the daemon that holds the twin lock, after checking that the recorded pid really is it."""
    pid = FileLock(state_dir / TWIN_LOCK).holder()
    if pid is None or not is_our_daemon(pid, state_dir):
        raise RuntimeError(
            f"the twin in {state_dir} does not answer and pid {pid} is not its daemon; nothing was signalled"
        )
    _note(state_dir, f"pid {os.getpid()} sends {sig.name} to the daemon (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_lock_free(state_dir: Path, deadline: float) -> bool:
    lock = FileLock(state_dir / TWIN_LOCK)
    pid = lock.holder()
    while time.monotonic() < deadline:
        if pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when this process started it (else it stays a zombie)
        if not lock.is_held_elsewhere():
            return True
        time.sleep(0.05)
    return False


def _busy(state_dir: Path) -> str:
    pid = FileLock(state_dir / TWIN_LOCK).holder()
    what = "running" if is_running(state_dir) else "starting or stopping"
    return f"a twin is already {what} in {state_dir} (pid {pid}); `tandem twin down` stops it"


def _wait_until_ready(state_dir: Path, timeout: float = 90.0) -> None:
    """Wait for a twin another command is starting; fail when that start-up fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(state_dir):
            return
        if not FileLock(state_dir / TWIN_LOCK).is_held_elsewhere():
            raise RuntimeError(f"the twin another command was starting in {state_dir} did not come up")
        time.sleep(0.1)
    raise RuntimeError(f"the twin another command is starting in {state_dir} was not ready in {timeout:.0f} s")


@contextlib.contextmanager
def ensure_running(state_dir: Path, **kwargs: Any) -> Iterator[bool]:
    """Use the running twin, or start one for the block. Yields whether this call started it.

    Every user holds a shared lock on ``users.lock`` for the block; the last user out stops a twin that
    was started only for such use (never one from ``tandem twin up``), so two invokes or an invoke and a
    drill can overlap without one stopping the twin under the other.
    """
    users = FileLock(state_dir / USERS_LOCK)
    users.acquire(shared=True, blocking=True)  # waits only while a last user is stopping the twin
    try:
        started = False
        if not is_running(state_dir):
            try:
                start(state_dir, ephemeral=True, **kwargs)
                started = True
            except TwinBusy:
                _wait_until_ready(state_dir)
        yield started
    finally:
        try:
            if users.acquire():  # exclusive now: nobody else is using the twin
                with contextlib.suppress(TwinNotRunning):
                    if read_state(state_dir).get("ephemeral"):
                        stop(state_dir)
        finally:
            users.close()

"""Who owns a twin's state directory, and proof of ownership before any process is signalled.

One twin per state directory. The daemon holds an exclusive ``flock`` on ``<state_dir>/twin.lock`` for its
whole life: the launcher takes the lock *before* it spawns the daemon and hands the open descriptor down,
so there is no window in which two launchers both see "free". The kernel drops the lock when the daemon
dies, even by ``kill -9``, so "lock free" means "no twin alive", and whatever is left (PostgreSQL servers in
this directory's data trees, the state file) is debris the next ``up``/``down`` removes.

Users of a twin that may have started it for themselves (the drill, ``invoke``) hold a *shared* lock on
``users.lock`` while they use it; the last one out stops a twin that was started only for such use. A drill
also holds ``drill.lock`` exclusively: two drills on one twin would take each other's poison.

A pid is signalled only after ``/proc/<pid>/cmdline`` shows it is this state directory's daemon: a stale
pid from before a reboot may belong to anything by now.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tandem.localpg import pg_bin, server_command

TWIN_LOCK = "twin.lock"
USERS_LOCK = "users.lock"
DRILL_LOCK = "drill.lock"
DAEMON_MODULE = "tandem.twin.daemon"


class LockBusy(RuntimeError):
    """The lock is held by someone else; the message names the holder when it is known."""


class FileLock:
    """An ``flock`` on a file in the state directory; the file's text is the holder's pid (for messages)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, shared: bool = False, blocking: bool = False) -> bool:
        """Take the lock; False when it is held elsewhere and ``blocking`` is off."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(self.fd, flags)
        except BlockingIOError:
            return False
        return True

    def record_holder(self, pid: int) -> None:
        """Write the pid of whoever holds the lock now (the launcher writes its daemon's)."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def holder(self) -> int | None:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def is_held_elsewhere(self) -> bool:
        """True while another open descriptor holds the lock (we take and drop it to find out)."""
        probe = FileLock(self.path)
        try:
            return not probe.acquire()
        finally:
            probe.close()

    def close(self) -> None:
        """Drop our descriptor; the lock stays held by any process that inherited it."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def is_our_daemon(pid: int, state_dir: Path) -> bool:
    """True only when ``pid`` runs the twin daemon for ``state_dir`` (checked on its command line)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv if a]
    if DAEMON_MODULE not in args or "--state-dir" not in args:
        return False
    index = args.index("--state-dir") + 1
    return index < len(args) and Path(args[index]).resolve() == state_dir.resolve()


def postgres_prefix(state_dir: Path) -> str:
    """Name prefix of this state directory's PostgreSQL trees in the temp dir (found again after a crash).

    The trees live in the system temp dir rather than the state dir because the ``postgres`` OS user must be
    able to traverse every parent directory, which a checkout under a private home may not allow.
    """
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return f"tandem-twin-pg-{digest}-"


def new_postgres_root(state_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=postgres_prefix(state_dir)))


def remove_postgres_trees(state_dir: Path) -> list[str]:
    """Stop every server in this state directory's PostgreSQL trees and remove the trees; says what it did.

    Only call this while holding the twin lock: a live twin's servers are in the same trees.
    """
    done: list[str] = []
    for root in sorted(Path(tempfile.gettempdir()).glob(postgres_prefix(state_dir) + "*")):
        done += stop_postgres_under(root)
        done += kill_processes_naming(root)
        deadline = time.monotonic() + 10.0
        while root.exists() and time.monotonic() < deadline:  # a process on its way out may still add a file
            shutil.rmtree(root, ignore_errors=True)
            if root.exists():
                kill_processes_naming(root)
                time.sleep(0.1)
        done.append(f"removed {root}" if not root.exists() else f"could not remove {root}")
    return done


def processes_naming(root: Path) -> list[int]:
    """Live processes whose command line names ``root`` or a path inside it, or that work inside it (cwd: a
    server's children, such as its checkpointer, name no path but run in the data directory).

    The tree's name is unique to this state directory (see :func:`postgres_prefix`), so naming it proves the
    process works for this twin: e.g. a ``pg_basebackup`` the daemon had started when it was killed.
    """
    prefix = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if any(a == prefix or a.startswith(prefix + b"/") for a in args):
                found.append(int(entry.name))
                continue
        with contextlib.suppress(OSError):  # a server's children ("postgres: checkpointer") work in its data dir
            cwd = os.fsencode(os.readlink(entry / "cwd"))
            if cwd == prefix or cwd.startswith(prefix + b"/"):
                found.append(int(entry.name))
    return found


def kill_processes_naming(root: Path, timeout: float = 10.0) -> list[str]:
    """SIGKILL what still works in ``root`` after a clean stop, and wait until it is gone (else it writes on)."""
    done: list[str] = []
    deadline = time.monotonic() + timeout
    while (pids := processes_naming(root)) and time.monotonic() < deadline:  # again: one may start another
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                done.append(f"killed process {pid} working in {root}")
        time.sleep(0.05)
    return done


def stop_postgres_under(root: Path) -> list[str]:
    """Stop (immediately) every PostgreSQL server whose data directory is under ``root``."""
    done = []
    for pidfile in root.glob("*/data/postmaster.pid"):
        data = pidfile.parent
        cmd = server_command([pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"])
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(cmd, capture_output=True, check=False, timeout=60)
        done.append(f"stopped PostgreSQL in {data}")
    return done

"""Lambda SnapStart where the twin and the bench run functions: the snapshot is a process, a restore a fork.

Lambda runs a SnapStart version's init once, then its ``@register_before_snapshot`` hooks (last registered
first), and snapshots the execution environment; every new environment resumes from that snapshot and runs
the ``@register_after_restore`` hooks (in the order registered) before its first invocation. Here the
process that ran init and the before-snapshot hooks *is* the snapshot, and ``os.fork`` is the restore: the
child starts from the same memory, as a restored copy does, while the parent only holds on to it.

Harsher than Lambda on one point, on purpose: every socket the snapshot held is shut down in the child. No
connection survives a real restore, so a connection opened before the snapshot must fail at its first use
here too, not keep working by luck. The standard library and the function's own ``snapshot_restore_py`` only:
the bench runs it on the bare artifact.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

#: Lambda sets it to "snap-start" in a SnapStart version's environment ("on-demand" otherwise).
INITIALIZATION_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"
SNAP_START = "snap-start"


def enabled(environ: Mapping[str, str]) -> bool:
    return environ.get(INITIALIZATION_TYPE) == SNAP_START


Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]  # what the registry holds: (func, args, kwargs)


def _hooks(before: bool) -> list[Hook]:
    import snapshot_restore_py  # where the function registered its hooks (Lambda's runtime reads the same lists)

    registry = snapshot_restore_py.get_before_snapshot() if before else snapshot_restore_py.get_after_restore()
    return list(registry)


def take_snapshot() -> None:
    """The before-snapshot hooks, the last one registered first (Lambda's order)."""
    for func, args, kwargs in reversed(_hooks(before=True)):
        func(*args, **kwargs)


def _cut_connections() -> int:
    """Shut down every socket this process holds (the child's copies of the snapshot's); returns how many."""
    cut = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
                cut += 1
            finally:
                sock.detach()  # the fd stays with whoever owns it; only the connection is gone
    return cut


def _die_with(snapshot: int) -> None:
    """The copy must not outlive the snapshot process: whoever started the execution environment kills that one
    (the twin's ``Worker.kill``, a crashed runtime), and the copy is what runs the invocations."""

    def watch() -> None:
        while os.getppid() == snapshot:
            time.sleep(0.2)
        os._exit(137)  # as if killed with it

    threading.Thread(target=watch, name="snapshot-gone", daemon=True).start()


def restore(hold: Callable[[int], NoReturn]) -> None:
    """Fork a restored copy; return in it after its after-restore hooks ran. The snapshot (the parent) calls
    ``hold(child_pid)``, which must not return: it waits for the copy and exits as it does."""
    snapshot = os.getpid()
    pid = os.fork()
    if pid:
        hold(pid)
    _die_with(snapshot)
    _cut_connections()
    for func, args, kwargs in _hooks(before=False):
        func(*args, **kwargs)


def exit_like(pid: int) -> NoReturn:
    """Wait for ``pid`` and end this process with its exit status (a signal's death as 128 + signal)."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)

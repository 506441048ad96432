"""A loopback TCP relay that can be closed: how the twin models the border between the regions.

What one region's functions call in the other (its APIs, its ingress) goes through a relay that a partition
closes (:mod:`tandem.twin.border`) - and then it also cuts the connections already open, as a network cut does.
(The Aurora clusters' endpoints, which also stop answering, are :mod:`tandem.twin.endpoints`.)

The relay is open while its flag file exists. It runs as its own small process (its relaying never waits on
the twin's interpreter): ``python -m tandem.twin.relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT FLAG
[--cut]``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from tandem.template import ROOT


class FlaggedProcess:
    """One of our small processes on loopback (``python -m <module>``) that serves while its flag file exists;
    what it meets goes to the flag's ``.log``."""

    module: ClassVar[str]

    def __init__(self, flag: Path) -> None:
        self.flag = flag
        self._process: subprocess.Popen[bytes] | None = None

    def _launch(self, args: list[str]) -> subprocess.Popen[bytes]:
        with self.flag.with_suffix(".log").open("ab") as log:  # what it met, for a post-mortem
            self._process = subprocess.Popen(  # our own module, on loopback
                [sys.executable, "-m", self.module, *args],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        return self._process

    def open(self, is_open: bool) -> None:
        """Serve (open) or refuse (closed)."""
        if is_open:
            self.flag.touch()
        else:
            self.flag.unlink(missing_ok=True)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)


class Relay(FlaggedProcess):
    """The relay process from ``listen`` to ``target``; ``cut``: closing it also cuts open connections."""

    module = "tandem.twin.relay"

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], flag: Path, *, cut: bool = False) -> None:
        super().__init__(flag)
        self.listen, self.target, self.cut = listen, target, cut

    @property
    def url(self) -> str:
        return f"http://{self.listen[0]}:{self.listen[1]}"

    def start(self) -> None:
        self._launch([*map(str, (*self.listen, *self.target)), str(self.flag), *(["--cut"] if self.cut else [])])


def serve(listen: tuple[str, int], target: tuple[str, int], flag: Path, cut: bool = False) -> None:
    """Relay ``listen`` to ``target`` while ``flag`` exists; refuse connections while it does not, and with
    ``cut`` also close the open ones the moment it goes (checked every 0.1 s).

    One thread, non-blocking sockets; a pair is closed as one, and nothing that happens to a connection (a
    server killed under it, a client that stopped reading) may end the loop: the endpoint outlives them all.
    """
    selector = selectors.DefaultSelector()
    server = socket.create_server(listen)
    server.setblocking(False)
    selector.register(server, selectors.EVENT_READ)
    peers: dict[socket.socket, socket.socket] = {}

    def close(sock: socket.socket) -> None:
        for s in (sock, peers.pop(sock, None)):
            if s is None:
                continue
            peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):  # already unregistered
                selector.unregister(s)
            s.close()

    def accept() -> None:
        client, _ = server.accept()
        if not os.path.exists(flag):  # an inactive writer endpoint
            client.close()
            return
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:  # the region's server is down
            client.close()
            return
        peers[client], peers[upstream] = upstream, client
        for s in (client, upstream):
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)

    def relay(sock: socket.socket) -> None:
        if sock not in peers:  # its pair was closed earlier in this round
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            close(sock)
            return
        other = peers[sock]
        try:
            other.settimeout(5)  # a peer that stopped reading must not stall every other connection
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            close(sock)

    while True:
        ready = selector.select(timeout=0.1 if cut else None)
        if cut and peers and not os.path.exists(flag):  # the border closed: a network cut ends them all
            for sock in list(peers):
                close(sock)
            continue
        for key, _ in ready:
            try:
                if key.fileobj is server:
                    accept()
                else:
                    assert isinstance(key.fileobj, socket.socket)
                    relay(key.fileobj)
            except Exception as exc:  # the endpoint must outlive any one connection
                print(f"relay {listen}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                if isinstance(key.fileobj, socket.socket) and key.fileobj is not server:
                    close(key.fileobj)


if __name__ == "__main__":
    serve((sys.argv[1], int(sys.argv[2])), (sys.argv[3], int(sys.argv[4])), Path(sys.argv[5]), "--cut" in sys.argv[6:])

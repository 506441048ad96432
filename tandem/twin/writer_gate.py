"""A region's Aurora *cluster* (writer) endpoint in the twin: open only while the region holds the writer.

In Aurora Global Database a secondary cluster's writer endpoint is inactive until a switchover or failover
promotes it, and the old primary's goes inactive when it is demoted; only the reader endpoint answers
everywhere. The twin's clusters are one PostgreSQL server each, on 127.0.0.1 (the reader endpoint); this
gate listens on 127.0.0.2 with the same port (the cluster endpoint) and relays to the server while the
region is the writer (a flag file, set by :class:`tandem.twin.aurora.AuroraGlobal`), and otherwise closes
every connection it accepts. It runs as its own small process (its relaying never waits on the twin's
interpreter): ``python -m tandem.twin.writer_gate PORT FLAG``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path

from tandem.template import ROOT

WRITER_HOST = "127.0.0.2"  # the cluster endpoint's address; the server's own (the reader endpoint) is 127.0.0.1
READER_HOST = "127.0.0.1"


class WriterGate:
    """The gate process of one region's cluster endpoint."""

    def __init__(self, port: int, flag: Path) -> None:
        self.port, self.flag = port, flag
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.flag.with_suffix(".log").open("ab") as log:  # what it met, for a post-mortem
            self._process = subprocess.Popen(  # our own module, on loopback
                [sys.executable, "-m", "tandem.twin.writer_gate", str(self.port), str(self.flag)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def open(self, is_open: bool) -> None:
        """Writer here (relay) or not (refuse)."""
        if is_open:
            self.flag.touch()
        else:
            self.flag.unlink(missing_ok=True)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)


def serve(port: int, flag: Path) -> None:
    """Relay WRITER_HOST:port to READER_HOST:port while ``flag`` exists; close connections while it does not.

    One thread, non-blocking sockets; a pair is closed as one, and nothing that happens to a connection (a
    server killed under it, a client that stopped reading) may end the loop: the endpoint outlives them all.
    """
    selector = selectors.DefaultSelector()
    server = socket.create_server((WRITER_HOST, port))
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
            upstream = socket.create_connection((READER_HOST, port), timeout=5)
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
        for key, _ in selector.select():
            try:
                if key.fileobj is server:
                    accept()
                else:
                    assert isinstance(key.fileobj, socket.socket)
                    relay(key.fileobj)
            except Exception as exc:  # the endpoint must outlive any one connection
                print(f"writer gate {port}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                if isinstance(key.fileobj, socket.socket) and key.fileobj is not server:
                    close(key.fileobj)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))

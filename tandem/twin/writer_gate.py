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
        self._process = subprocess.Popen(  # our own module, on loopback
            [sys.executable, "-m", "tandem.twin.writer_gate", str(self.port), str(self.flag)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
    """Relay WRITER_HOST:port to READER_HOST:port while ``flag`` exists; close connections while it does not."""
    selector = selectors.DefaultSelector()
    server = socket.create_server((WRITER_HOST, port))
    server.setblocking(False)
    selector.register(server, selectors.EVENT_READ)
    peers: dict[socket.socket, socket.socket] = {}

    def close(sock: socket.socket) -> None:
        for s in (sock, peers.pop(sock, None)):
            if s is not None:
                peers.pop(s, None)
                selector.unregister(s)
                s.close()

    while True:
        for key, _ in selector.select():
            if key.fileobj is server:
                client, _ = server.accept()
                if not os.path.exists(flag):  # an inactive writer endpoint
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection((READER_HOST, port), timeout=5)
                except OSError:  # the region's server is down
                    client.close()
                    continue
                peers[client], peers[upstream] = upstream, client
                for s in (client, upstream):
                    s.setblocking(False)
                    selector.register(s, selectors.EVENT_READ)
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data or sock not in peers:
                close(sock)
                continue
            other = peers[sock]
            try:
                other.setblocking(True)
                other.sendall(data)
                other.setblocking(False)
            except OSError:
                close(sock)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))

"""The twin's border relays: closed by a partition, a relay also cuts the connections already open, and relays
again once healed (the clusters' endpoints: test_cluster_endpoints)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.localpg import free_port
from tandem.twin.relay import Relay

SERVER_HOST = "127.0.0.1"


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def server() -> Iterator[socketserver.ThreadingTCPServer]:
    """What the other region serves (an echo)."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer((SERVER_HOST, 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _listening(relay: Relay) -> None:
    deadline = time.monotonic() + 10
    while True:  # listening once a connection is accepted (and closed: the flag is not set yet)
        try:
            socket.create_connection(relay.listen, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _answer(port: int, payload: bytes, host: str) -> bytes | None:
    """What the relay echoes; None when it closes the connection without an answer."""
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            conn.sendall(payload)
            return conn.recv(65536) or None
    except OSError:
        return None


def test_a_border_relay_closed_by_a_partition_cuts_open_connections_and_relays_again_once_healed(
    server: socketserver.ThreadingTCPServer, tmp_path: Path
) -> None:
    border = Relay(("127.0.0.1", free_port()), (SERVER_HOST, int(server.server_address[1])), tmp_path / "b", cut=True)
    border.start()
    try:
        _listening(border)
        border.open(True)
        conn = socket.create_connection(border.listen, timeout=2)
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"
        border.open(False)  # the partition
        conn.settimeout(2)
        assert conn.recv(1) == b""  # the open connection is cut (closed by the relay), not left hanging
        conn.close()
        assert _answer(border.listen[1], b"ping", host="127.0.0.1") is None
        border.open(True)  # healed
        assert _answer(border.listen[1], b"ping", host="127.0.0.1") == b"ping"
    finally:
        border.stop()

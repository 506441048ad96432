"""The twin's relays: the writer (cluster) endpoint relays only while its region holds the writer, and
outlives any connection - a server that dies under open connections must not take the endpoint down with it;
a border relay closed by a partition also cuts the connections already open, and relays again once healed."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.localpg import free_port
from tandem.twin.relay import READER_HOST, WRITER_HOST, Relay, WriterGate


class _Echo(socketserver.BaseRequestHandler):
    """Echoes; ``die`` makes it drop the connection at once (a database server killed mid-conversation)."""

    def handle(self) -> None:
        while data := self.request.recv(4096):
            if b"die" in data:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                self.request.close()
                return
            self.request.sendall(data)


_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() resets the connection


@pytest.fixture
def server() -> Iterator[socketserver.ThreadingTCPServer]:
    """The region's database server stand-in on the reader endpoint's address."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer((READER_HOST, 0), _Echo)
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


@pytest.fixture
def gate(server: socketserver.ThreadingTCPServer, tmp_path: Path) -> Iterator[WriterGate]:
    port = server.server_address[1]
    g = WriterGate(int(port), tmp_path / "writer")
    g.start()
    _listening(g)
    yield g
    g.stop()


def _answer(port: int, payload: bytes, host: str = WRITER_HOST) -> bytes | None:
    """What the endpoint echoes; None when it closes the connection without an answer."""
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            conn.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
            return received or None
    except OSError:
        return None


def test_the_writer_endpoint_answers_only_in_the_writer_region(gate: WriterGate) -> None:
    assert _answer(gate.port, b"ping") is None  # an inactive endpoint: the connection is closed at once
    gate.open(True)
    assert _answer(gate.port, b"ping" * 10_000) == b"ping" * 10_000
    gate.open(False)
    assert _answer(gate.port, b"ping") is None


def test_connections_cut_on_both_sides_at_once_do_not_take_the_endpoint_down(gate: WriterGate) -> None:
    """The server dies under a connection while its client writes and goes too: both ends close together."""
    gate.open(True)
    for _ in range(200):
        conn = socket.create_connection((WRITER_HOST, gate.port), timeout=2)
        conn.sendall(b"x")
        conn.recv(1)
        conn.sendall(b"die")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        conn.close()
    assert _answer(gate.port, b"still here") == b"still here"


def test_a_border_relay_closed_by_a_partition_cuts_open_connections_and_relays_again_once_healed(
    server: socketserver.ThreadingTCPServer, tmp_path: Path
) -> None:
    border = Relay(("127.0.0.1", free_port()), (READER_HOST, int(server.server_address[1])), tmp_path / "b", cut=True)
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

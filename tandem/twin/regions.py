"""One emulator endpoint per region, on its own loopback port, sharing moto's state in this process.

An outage closes the region's listening socket *and* every connection already open to it, so clients
see what they would see when a region dies: connection refused (or reset), while the other region keeps
answering. Restore listens on the same port again; moto's state (shared by all regions) is untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import ThreadedWSGIServer, make_server

from tandem import moto_ext
from tandem.twin.faults import FaultingApp, Faults


class TrackingServer:
    """A werkzeug server that remembers its client sockets so an outage can cut them."""

    def __init__(self, host: str, port: int, app: Any = None, request_handler: Any = None) -> None:
        self.clients: set[socket.socket] = set()
        self.lock = threading.Lock()
        if app is None:  # the region's AWS endpoint: moto
            app, request_handler = DomainDispatcherApplication(create_backend_app), MotoRequestHandler
        self.server: ThreadedWSGIServer = make_server(  # type: ignore[assignment]
            host, port, app, threaded=True, request_handler=request_handler
        )
        original = self.server.process_request

        def process_request(request: Any, client_address: Any) -> None:
            with self.lock:
                self.clients.add(request)
            original(request, client_address)

        self.server.process_request = process_request  # type: ignore[method-assign]
        finished = self.server.shutdown_request

        def shutdown_request(request: Any) -> None:  # a connection that ended is no longer the outage's to cut
            with self.lock:
                self.clients.discard(request)
            finished(request)

        self.server.shutdown_request = shutdown_request  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def kill(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            clients, self.clients = list(self.clients), set()
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.thread.join(timeout=5)


class RegionEndpoint:
    """The AWS API endpoint of one emulated region."""

    def __init__(self, region: str, port: int, host: str = "127.0.0.1") -> None:
        moto_ext.apply()
        self.region = region
        self.host = host
        self.port = port
        self.faults = Faults()
        self._server: TrackingServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is None:
            app = FaultingApp(DomainDispatcherApplication(create_backend_app), self.faults)
            server = TrackingServer(self.host, self.port, app, MotoRequestHandler)
            server.start()
            self._server = server

    def stop(self) -> None:
        """The region's API goes dark: new connections are refused, open ones are reset."""
        server, self._server = self._server, None
        if server is not None:
            server.kill()

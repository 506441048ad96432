"""A region's Aurora cluster endpoints, with IAM database authentication done where Aurora does it: at login.

The twin's cluster is one PostgreSQL server on ``127.0.0.1:<port>``, which only the twin itself talks to there.
What the functions reach are its endpoints, served by one small process per region:

- the **reader endpoint** (``READER_HOST:<port>``) answers always;
- the **cluster (writer) endpoint** (``WRITER_HOST:<port>``) answers only while its flag file exists: a global
  secondary's writer endpoint is inactive until a switchover or failover promotes it.

Both are TLS only (``rds.force_ssl``) and present the server's certificate. Each login is passed to the server
from ``FRONT_SOURCE``, where ``pg_hba.conf`` (:mod:`tandem.localpg`) lets members of ``rds_iam`` in without a
password and nowhere else (they have none): so the server's first answer says who logs in with IAM. An
immediate AuthenticationOk means an ``rds_iam`` member, and the endpoint asks the client for its token the way
Aurora does (a cleartext password request over TLS) and checks it (:func:`check_token`) before the client sees
that AuthenticationOk; a bad token ends the login with Aurora's ``28P01 PAM authentication failed``. Any other
login (the master user's SCRAM exchange) passes through untouched, and after the login every byte is relayed.

Runs as ``python -m tandem.twin.endpoints PORT FLAG REGION CERT KEY`` (its relaying never waits on the twin's
interpreter), one thread per connection.
"""

from __future__ import annotations

import contextlib
import hmac
import select
import socket
import ssl
import struct
import sys
import threading
import time
from calendar import timegm
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tandem.localpg import ENDPOINT_SOURCE as FRONT_SOURCE
from tandem.twin.relay import FlaggedProcess

WRITER_HOST = "127.0.0.2"  # the cluster (writer) endpoint's address
READER_HOST = "127.0.0.3"  # the reader endpoint's address
SERVER_HOST = "127.0.0.1"  # the server itself: the twin's own way in, never a function's

#: the credentials every function of the twin signs with (the emulator's convention): access key -> secret key
TWIN_KEYS = {"testing": "testing"}
TOKEN_SECONDS = 900  # RDS accepts a token for 15 minutes
CLOCK_SKEW_SECONDS = 300

_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST = 80877103, 80877104, 80877102


def check_token(
    token: str, *, user: str, region: str, hosts: set[str], port: int, now: float, keys: Callable[[str], str | None]
) -> str | None:
    """Why RDS would refuse ``token`` for ``user`` on this cluster (None: it would accept it): a SigV4-presigned
    ``connect`` of service ``rds-db`` in the cluster's region, for this user and one of the cluster's endpoints,
    signed by a known key, at most 15 minutes old. The signature is recomputed with botocore's own signer."""
    url = urlsplit(f"https://{token}")
    if url.hostname not in hosts or url.port != port:
        return f"token for {url.hostname}:{url.port}, not this cluster"
    pairs = parse_qsl(url.query, keep_blank_values=True)
    params = dict(pairs)
    if params.get("Action") != "connect" or params.get("DBUser") != user:
        return f"token is not a connect for {user}"
    try:
        key_id, _day, scope_region, service, _ = params["X-Amz-Credential"].split("/")
        signed_at = timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        expires = int(params["X-Amz-Expires"])
        signature = params["X-Amz-Signature"]
    except (KeyError, ValueError):
        return "token is not a SigV4 presigned request"
    if (service, scope_region) != ("rds-db", region):
        return f"token signed for {service} in {scope_region}"
    if not signed_at - CLOCK_SKEW_SECONDS <= now <= signed_at + min(expires, TOKEN_SECONDS):
        return "token expired"
    secret = keys(key_id)
    if secret is None:
        return "token signed by an unknown access key"
    unsigned = urlencode([(k, v) for k, v in pairs if k != "X-Amz-Signature"])
    request = AWSRequest(method="GET", url=f"https://{url.hostname}:{url.port}/?{unsigned}")
    request.context["timestamp"] = params["X-Amz-Date"]
    auth = SigV4QueryAuth(Credentials(key_id, secret, params.get("X-Amz-Security-Token")), "rds-db", region, expires)
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    return None if hmac.compare_digest(expected, signature) else "token signature does not match"


# ------------------------------------------------------------------------------------------- the protocol
def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _untyped(sock: socket.socket) -> bytes:
    """A startup-phase message (length first, no type byte), whole."""
    head = _exactly(sock, 4)
    return head + _exactly(sock, struct.unpack("!i", head)[0] - 4)


def _typed(sock: socket.socket) -> bytes:
    head = _exactly(sock, 5)
    return head + _exactly(sock, struct.unpack("!i", head[1:])[0] - 4)


def _error(code: str, message: str) -> bytes:
    pairs = ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    fields = b"".join(k + v.encode() + b"\0" for k, v in pairs)
    return b"E" + struct.pack("!i", len(fields) + 5) + fields + b"\0"


def _startup_user(message: bytes) -> str:
    parts = message[8:].split(b"\0")
    pairs = dict(zip(parts[0::2], parts[1::2], strict=False))
    return pairs.get(b"user", b"").decode()


#: (access key id, database user) -> why IAM would not allow ``rds-db:connect`` for it (None: allowed)
Authorize = Callable[[str, str], str | None]


class Endpoints:
    """The endpoints' connection handling: the process runs one; a test may run one in-process (:meth:`listen`)
    with its own ``keys`` (access key id -> secret key) and ``authorize`` (the signer's IAM policy)."""

    def __init__(
        self, port: int, flag: Path, region: str, cert: Path, key: Path, *,
        keys: Callable[[str], str | None] = TWIN_KEYS.get, authorize: Authorize | None = None,
    ) -> None:  # fmt: skip
        self.port, self.flag, self.region, self._cert, self._key = port, flag, region, cert, key
        self._keys, self._authorize = keys, authorize
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._servers: list[socket.socket] = []

    @property
    def _tls(self) -> ssl.SSLContext:
        """Loaded at the first login: the endpoints start before the server has made its certificate."""
        with self._lock:
            if self._context is None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(self._cert, self._key)
                self._context = context
            return self._context

    def serve(self) -> None:
        self.listen()
        threading.Event().wait()

    def listen(self) -> None:
        """Listen on both endpoints, each accepted on its own thread, until :meth:`close`."""
        for host in (READER_HOST, WRITER_HOST):
            server = socket.create_server((host, self.port))
            threading.Thread(target=self._accept, args=(server, host == WRITER_HOST), daemon=True).start()
            self._servers.append(server)

    def close(self) -> None:
        """Stop listening (open sessions end with their clients)."""
        servers, self._servers = self._servers, []
        for server in servers:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            server.close()

    def _accept(self, server: socket.socket, writer: bool) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed: this endpoint is gone
                return
            if writer and not self.flag.exists():  # an inactive writer endpoint
                client.close()
                continue
            threading.Thread(target=self._session, args=(client,), daemon=True).start()

    def _session(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the login's small messages, at once
            first = _untyped(client)
            code = struct.unpack("!i", first[4:8])[0]
            if code == _GSS_REQUEST:  # no GSSAPI encryption here: the client goes on to ask for TLS
                client.sendall(b"N")
                first = _untyped(client)
                code = struct.unpack("!i", first[4:8])[0]
            if code == _CANCEL_REQUEST:
                with socket.create_connection((SERVER_HOST, self.port), 5, (FRONT_SOURCE, 0)) as cancel:
                    cancel.sendall(first)
                return
            if code != _SSL_REQUEST:
                client.sendall(_error("28000", "no pg_hba.conf entry: SSL off (rds.force_ssl requires TLS)"))
                return
            client.sendall(b"S")
            tls = self._tls.wrap_socket(client, server_side=True)
            client = tls
            startup = _untyped(tls)
            upstream = socket.create_connection((SERVER_HOST, self.port), 5, (FRONT_SOURCE, 0))
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.sendall(startup)
            answer = _typed(upstream)
            if answer[:1] == b"R" and struct.unpack("!i", answer[5:9])[0] == 0:  # trusted here: an rds_iam member
                refusal = self._iam_login(tls, _startup_user(startup))
                if refusal is not None:
                    tls.sendall(refusal)
                    return
            tls.sendall(answer)
            _relay(tls, upstream)
        except (OSError, ConnectionError, ssl.SSLError, struct.error):
            pass  # a client that went away, a server that is down: the connection ends, the endpoint stays
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _iam_login(self, tls: ssl.SSLSocket, user: str) -> bytes | None:
        """Ask for the token (AuthenticationCleartextPassword) and check it; the error to send, or None."""
        tls.sendall(b"R" + struct.pack("!ii", 8, 3))
        message = _typed(tls)
        token = message[5:].rstrip(b"\0").decode("utf-8", "replace") if message[:1] == b"p" else ""
        reason = check_token(
            token, user=user, region=self.region, hosts={WRITER_HOST, READER_HOST}, port=self.port,
            now=time.time(), keys=self._keys,
        )  # fmt: skip
        if reason is None and self._authorize is not None:
            reason = self._authorize(
                dict(parse_qsl(urlsplit(f"https://{token}").query))["X-Amz-Credential"].split("/")[0], user
            )
        if reason is None:
            return None
        print(f"IAM login of {user!r} refused: {reason}", file=sys.stderr, flush=True)
        return _error("28P01", f'PAM authentication failed for user "{user}"')


def _relay(tls: ssl.SSLSocket, upstream: socket.socket) -> None:
    """Bytes both ways until either side closes (TLS may hold decrypted bytes select cannot see: pending())."""
    while True:
        ready = [tls] if tls.pending() else select.select([tls, upstream], [], [])[0]
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (upstream if sock is tls else tls).sendall(data)


class ClusterEndpoints(FlaggedProcess):
    """The endpoint process of one region's cluster; :meth:`open` activates or deactivates its writer endpoint."""

    module = "tandem.twin.endpoints"

    def __init__(self, port: int, flag: Path, region: str, cert: Path, key: Path) -> None:
        super().__init__(flag)
        self.port, self.region, self.cert, self.key = port, region, cert, key

    def start(self) -> None:
        process = self._launch([str(self.port), str(self.flag), self.region, str(self.cert), str(self.key)])
        deadline = time.monotonic() + 10
        waiting = [READER_HOST, WRITER_HOST]
        while time.monotonic() < deadline:  # listening on both addresses before anyone is told about them
            with contextlib.suppress(OSError), socket.create_connection((waiting[0], self.port), 0.2):
                waiting.pop(0)  # the reader listens first: under load the writer came a moment later, refused
                if not waiting:
                    return
                continue
            if process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"the cluster endpoints on port {self.port} did not start (see {self.flag}.log)")


if __name__ == "__main__":
    Endpoints(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5])).serve()

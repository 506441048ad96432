"""Connections to the ledger database: credentials the AWS way, TLS, reuse across invocations.

Credentials come from an IAM database authentication token (``auth=iam``: the functions, each as its own
database role) or a Secrets Manager secret (``auth=secret``: the master user, for the deploy's schema step
only); nothing is ever read from code or template. The connection is kept for the next
invocation and dropped on any connection-level error so the next call re-opens it (after a failover the
writer endpoint points at a new instance).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pg8000.native
from botocore.awsrequest import prepare_request_dict
from botocore.hooks import HierarchicalEmitter
from botocore.model import ServiceId
from botocore.signers import RequestSigner

from tandem_core.clients import client_for, session
from tandem_core.settings import AwsSettings, LedgerDbSettings

#: Errors after which the connection must be thrown away.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (pg8000.native.InterfaceError, OSError, ssl.SSLError)


#: how long an IAM authentication token is accepted (RDS: 15 minutes)
IAM_TOKEN_SECONDS = 900


class CredentialSource(Protocol):
    def credentials(self, *, refresh: bool = False) -> tuple[str, str]:
        """(user, password); ``refresh`` after an authentication failure (rotated secret)."""
        ...


class SecretCredentials:
    """The Aurora-managed master user secret: JSON with ``username`` and ``password``."""

    def __init__(self, secrets_client: Any, secret_arn: str) -> None:
        self._client = secrets_client
        self._arn = secret_arn
        self._cached: tuple[str, str] | None = None

    def credentials(self, *, refresh: bool = False) -> tuple[str, str]:
        if self._cached is None or refresh:
            value = self._client.get_secret_value(SecretId=self._arn)["SecretString"]
            data = json.loads(value)
            self._cached = (str(data["username"]), str(data["password"]))
        return self._cached


class IamTokenCredentials:
    """A fresh IAM database authentication token per connection (15 minutes valid), for a role granted rds_iam.

    The token is a SigV4-presigned ``connect`` request for ``rds-db``, made by botocore's own signer exactly as
    ``RDS.Client.generate_db_auth_token`` makes it, but without building an RDS client: that loads the RDS service
    model, ~50-70 ms of a cold start, for a signature that takes ~3 ms. No API call, no secret."""

    def __init__(self, settings: LedgerDbSettings, region: str, credentials: Any) -> None:
        """``credentials``: botocore credentials (the function's role, from its environment)."""
        self._settings = settings
        self._region = region
        self._emitter = HierarchicalEmitter()  # the signer holds it weakly
        self._signer = RequestSigner(ServiceId("rds-db"), region, "rds-db", "v4", credentials, self._emitter)

    def credentials(self, *, refresh: bool = False) -> tuple[str, str]:  # noqa: ARG002 - always fresh
        user = self._settings.user or ""
        return user, iam_auth_token(self._signer, self._settings.host, self._settings.port, user, self._region)


def iam_auth_token(signer: RequestSigner, host: str, port: int, user: str, region: str) -> str:
    """botocore's ``generate_db_auth_token``: the presigned URL of ``connect`` without its scheme."""
    request = {"url_path": "/", "query_string": "", "headers": {}, "method": "GET",
               "body": {"Action": "connect", "DBUser": user}}  # fmt: skip
    prepare_request_dict(request, f"https://{host}:{port}")
    url = signer.generate_presigned_url(
        request, operation_name="connect", expires_in=IAM_TOKEN_SECONDS, region_name=region, signing_name="rds-db"
    )
    return str(url)[len("https://") :]


def credentials_for(db: LedgerDbSettings, aws: AwsSettings) -> CredentialSource:
    """How a function logs in, as its settings say: an IAM token for its role, or the secret it names."""
    if db.auth == "iam":
        return IamTokenCredentials(db, aws.region, session().get_credentials())
    return SecretCredentials(client_for("secretsmanager", aws), db.secret_arn or "")


#: AWS's RDS root certificate authorities, shipped with the code (see the file's header for their source)
RDS_ROOTS = Path(__file__).with_name("rds-ca-bundle.pem")
_ROOT = re.compile(
    r"^# (?P<name>[^\n]+)\n(?P<pem>-----BEGIN CERTIFICATE-----\n.+?\n-----END CERTIFICATE-----)$", re.M | re.S
)


def rds_roots(region: str | None) -> str:
    """The RDS roots a cluster in ``region`` chains to (its RSA2048, RSA4096 and ECC384 roots), or every root
    when the region has none in the bundle. Loading only the region's three keeps verification off the cold
    start: all 87 roots take ~14 ms to load, three well under one."""
    roots = [(m["name"], m["pem"]) for m in _ROOT.finditer(RDS_ROOTS.read_text(encoding="ascii"))]
    mine = [pem for name, pem in roots if region and name.startswith(f"Amazon RDS {region} Root CA ")]
    return "\n".join(mine or [pem for _, pem in roots]) + "\n"


def ssl_context(settings: LedgerDbSettings) -> ssl.SSLContext | bool:
    """TLS as the settings ask: ``require`` encrypts, ``verify-full`` also checks the server's certificate and
    name, against ``sslrootcert`` or else AWS's RDS roots for the function's region.

    ``False`` (not None, which pg8000 reads as "try TLS") means plain TCP. Neither mode loads the system CA
    store: it would cost ~20 ms of every cold start, and no public CA signs a database's certificate.
    """
    if settings.sslmode == "disable":
        return False
    if settings.sslmode == "verify-full":
        if settings.sslrootcert:
            return ssl.create_default_context(cafile=settings.sslrootcert)
        return ssl.create_default_context(cadata=rds_roots(settings.region))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # "require": encrypted, server identity not verified (libpq's meaning)
    return context


class _Opening:
    """One connection attempt on a background thread; :meth:`result` waits for it (None: it failed)."""

    def __init__(self, attempt: Callable[[], pg8000.native.Connection]) -> None:
        self._attempt = attempt
        self._connection: pg8000.native.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-connect", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the caller opens again and meets the error itself
            self._connection = self._attempt()

    def result(self) -> pg8000.native.Connection | None:
        self._thread.join()
        return self._connection


class LedgerConnector:
    """Owns at most one open connection and hands it out; re-opens after a failure."""

    def __init__(self, settings: LedgerDbSettings, credentials: CredentialSource) -> None:
        self._settings = settings
        self._credentials = credentials
        self._connection: pg8000.native.Connection | None = None
        self._opening: _Opening | None = None
        self._tls: ssl.SSLContext | bool | None = None  # built by the first open: on open_ahead's thread

    def _tls_context(self) -> ssl.SSLContext | bool:
        if self._tls is None:
            self._tls = ssl_context(self._settings)
        return self._tls

    def open_ahead(self, prepare: Callable[[pg8000.native.Connection], object] | None = None) -> None:
        """Start opening the connection on a background thread, so that its waits - the secret's round trip, TCP,
        TLS, the login, then ``prepare`` (the ledger's migration check) - overlap what the caller does next (a cold
        start builds its other AWS clients meanwhile: ~8 ms). :meth:`connection` takes the result; if this
        attempt failed, it opens again and raises what it meets. Only the credentials' client is used on the
        thread: clients are thread-safe, building them is not."""
        if self._connection is None and self._opening is None:
            self._opening = _Opening(lambda: self._open_prepared(prepare))

    def _open_prepared(self, prepare: Callable[[pg8000.native.Connection], object] | None) -> pg8000.native.Connection:
        conn = self._open()
        if prepare is not None:
            try:
                prepare(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
        return conn

    @property
    def holds_connection(self) -> bool:
        """A connection is open (or opening) from an earlier use: it may have died since."""
        return self._connection is not None or self._opening is not None

    def connection(self) -> pg8000.native.Connection:
        if self._connection is None:
            opening, self._opening = self._opening, None
            opened = opening.result() if opening is not None else None
            self._connection = opened if opened is not None else self._open()
        return self._connection

    def discard(self) -> None:
        """Forget the current connection (after an error left it in an unknown state)."""
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is already broken; closing is a courtesy
                conn.close()

    def _open(self) -> pg8000.native.Connection:
        user, password = self._credentials.credentials()
        try:
            return self._connect(user, password)
        except pg8000.native.DatabaseError as exc:
            # 28P01 invalid_password / 28000 invalid_authorization: the secret may have rotated.
            if sqlstate(exc) not in {"28P01", "28000"}:
                raise
            user, password = self._credentials.credentials(refresh=True)
            return self._connect(user, password)

    def _connect(self, user: str, password: str) -> pg8000.native.Connection:
        # Our own socket, because pg8000 leaves Nagle on: the login handshake then stalls ~40 ms on
        # delayed ACKs, on every cold start and every reconnect after a failover.
        sock = socket.create_connection((self._settings.host, self._settings.port), self._settings.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return pg8000.native.Connection(
                user=user,
                password=password,
                host=self._settings.host,
                port=self._settings.port,
                database=self._settings.name,
                ssl_context=self._tls_context(),
                timeout=self._settings.timeout,
                application_name="tandem",
                sock=sock,
            )
        except BaseException:
            sock.close()
            raise


def sqlstate(exc: BaseException) -> str | None:
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        code = detail.get("C")
        return str(code) if code is not None else None
    return None

"""A throwaway local PostgreSQL server for tests, the drill and local invokes.

``initdb``/``pg_ctl`` refuse to run as root, so when we are root the server runs as the ``postgres``
system user (created by Debian's package). The server listens on loopback only, on a free port, with
password (SCRAM) authentication and TLS (a certificate from a local certificate authority, for 127.0.0.1) so
the functions' TLS path is the one exercised, server verification included. Everything lives in one
temporary directory that :meth:`LocalPostgres.stop` removes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pg8000.native
from pg8000.native import identifier, literal

#: where a cluster endpoint's logins come from (tandem.twin.endpoints): the only address rds_iam members log in from
ENDPOINT_SOURCE = "127.0.0.4"
SERVER_USER = "postgres"  # OS user that runs the server when we are root


class PostgresError(RuntimeError):
    pass


def pg_bin(tool: str) -> str:
    """Path of a PostgreSQL server tool (Debian keeps them out of PATH)."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)
    found = candidates[0] if candidates else shutil.which(tool)
    if not found:
        raise PostgresError(f"{tool} not found: install the PostgreSQL server ('make setup' does)")
    return found


_LISTEN_PORTS = range(20000, 32768)  # below Linux's ephemeral range (32768-60999): see free_port
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A loopback port nobody listens on, for a server that binds it a moment (or, after an outage, a while) later.

    Chosen outside the kernel's ephemeral range: a port from ``bind(0)`` is also what the kernel gives the
    next outgoing connection, and with the twin's many HTTP and database clients one of them took a port
    between our check and PostgreSQL's bind (a twin that failed to start, about once in five test runs).
    A port is never handed out twice by this process, so two servers started together cannot collide.
    """
    with _handed_out_lock:
        for _ in range(200):
            port = random.choice(_LISTEN_PORTS)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise OSError(f"no free loopback port in {_LISTEN_PORTS.start}-{_LISTEN_PORTS.stop - 1}")


def connect_uri(uri: str, timeout: float = 30) -> pg8000.native.Connection:
    """Connect with a libpq-style URI (what `tandem twin status --json` prints for each region)."""
    parts = urlsplit(uri)
    return pg8000.native.Connection(
        user=parts.username or "", password=parts.password, host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432, database=parts.path.lstrip("/"), timeout=timeout,
    )  # fmt: skip


def server_command(cmd: list[str]) -> list[str]:
    """``cmd`` as the OS user that owns the server's files (``postgres`` when we are root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *cmd]
    return cmd


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster in a temp dir. Use as a context manager or call start()/stop()."""

    database: str = "ledger"
    user: str = "tandem"
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    tls: bool = True
    base_dir: Path | None = None
    _owned_dir: bool = field(default=False, init=False)

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def connect(self, database: str | None = None, timeout: float = 30) -> pg8000.native.Connection:
        """A connection over loopback as this server's user, to ``database`` (default: its own)."""
        return pg8000.native.Connection(
            user=self.user, password=self.password, host="127.0.0.1", port=self.port,
            database=database or self.database, timeout=timeout,
        )  # fmt: skip

    def ensure_superuser(self, user: str, password: str) -> None:
        """A login role with ``password`` (created, or its password reset): a cluster's master user.

        Two plain statements, the password a quoted literal: any character a generated password may hold
        (``$``, quotes) stays inside the string (a ``DO $$ … $$`` block would end at a ``$$`` in it)."""
        conn = self.connect(timeout=10)
        try:
            exists = conn.run("SELECT 1 FROM pg_roles WHERE rolname = :u", u=user)
            verb = "ALTER" if exists else "CREATE"
            conn.run(f"{verb} ROLE {identifier(user)} WITH LOGIN SUPERUSER PASSWORD {literal(password)}")
        finally:
            conn.close()

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Create the cluster, start it and create the database."""
        base = self._prepare_dir()
        pwfile = base / "pwfile"
        self._run_as_owner_write(pwfile, self.password + "\n")
        try:
            self._server(
                pg_bin("initdb"), "-D", str(self.data_dir), "-U", self.user, "--pwfile", str(pwfile),
                "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync",
                "--locale=C.UTF-8",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        self._trust_endpoint_logins()
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base_dir}'",
            "fsync = on",
            "max_connections = 50",
            "wal_level = replica",
            "max_wal_senders = 4",
        ]
        if self.tls:
            if not shutil.which("openssl"):
                raise PostgresError("openssl is needed for the server's TLS certificate (make setup installs it)")
            self._make_certificate()
            conf += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
        self._append_conf(conf)
        self.launch()
        self._server(
            pg_bin("psql") if os.path.exists(pg_bin("psql")) else "psql",
            "-h", str(self.base_dir), "-p", str(self.port), "-U", self.user, "-d", "postgres", "-q",
            "-c", f"CREATE DATABASE {self.database}",
            env={"PGPASSWORD": self.password},
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (immediately) and remove its directory if we created it."""
        if self.base_dir is None:
            return
        self.halt("immediate")
        if self._owned_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    @property
    def running(self) -> bool:
        return self.base_dir is not None and (self.data_dir / "postmaster.pid").exists()

    def launch(self) -> None:
        """Start the server on an existing data directory and wait until it accepts connections."""
        assert self.base_dir is not None
        self._server(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.base_dir / "server.log"),
                     "-w", "-t", "30", "start")  # fmt: skip
        self._wait_ready()

    def halt(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data: ``fast`` is a clean shutdown, ``immediate`` a crash."""
        if self.running:
            with contextlib.suppress(PostgresError):
                self._server(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop")

    def promote(self) -> None:
        """End recovery on a standby: it becomes a writable primary on a new timeline."""
        self._server(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "30", "promote")

    def promote_at(self, lsn: str, timeout: float = 30.0) -> None:
        """End recovery exactly at ``lsn`` (what the standby has replayed), discarding WAL it received beyond.

        ``pg_ctl promote`` first replays everything received, so a standby whose replay was held back would
        lose nothing - kinder than a storage-level replica (Aurora) whose lagging pages are simply not there.
        A recovery target is read at start-up only: set it, restart, wait until recovery has ended.
        """
        conn = self.connect(database="postgres", timeout=10)
        try:
            conn.run(f"ALTER SYSTEM SET recovery_target_lsn = {literal(lsn)}")
            conn.run("ALTER SYSTEM SET recovery_target_action = 'promote'")
        finally:
            conn.close()
        self.halt("fast")
        self.launch()
        deadline = time.monotonic() + timeout
        while True:
            conn = self.connect(database="postgres", timeout=10)
            try:
                if conn.run("SELECT pg_is_in_recovery()") == [[False]]:
                    conn.run("ALTER SYSTEM RESET recovery_target_lsn")
                    conn.run("ALTER SYSTEM RESET recovery_target_action")
                    conn.run("SELECT pg_reload_conf()")
                    return
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise PostgresError(f"the standby on port {self.port} did not end recovery at {lsn} in {timeout} s")
            time.sleep(0.05)

    def standby_of(self, primary: LocalPostgres, application_name: str | None = None) -> None:
        """Make this (not yet started) server a streaming standby of ``primary`` and start it.

        ``application_name`` (e.g. the standby's AWS region) is what the primary's ``pg_stat_replication``
        shows for this standby; the twin's ``aurora_global_db_status()`` names the region's row with it.
        """
        self.user, self.password, self.database, self.tls = (
            primary.user,
            primary.password,
            primary.database,
            primary.tls,
        )
        self._prepare_dir()
        if self.tls:  # the copied data dir serves the primary's certificate: clients verify it against its CA
            shutil.copyfile(primary.ca_file, self.ca_file)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self._server(
            pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", primary.user,
            "-D", str(self.data_dir), "-R", "-X", "stream", "--no-sync", "-c", "fast",
            env={"PGPASSWORD": primary.password, "PGSSLMODE": "prefer"},
        )  # fmt: skip
        self._append_conf([
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base_dir}'",
            "hot_standby = on",
        ])  # fmt: skip
        if application_name is not None:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,63}", application_name):
                raise PostgresError(f"application_name {application_name!r} must be 1-63 of [A-Za-z0-9._-]")
            self._name_in_primary_conninfo(application_name)
        self.launch()

    def _name_in_primary_conninfo(self, application_name: str) -> None:
        """Add application_name to the primary_conninfo that ``pg_basebackup -R`` wrote (the last one wins)."""
        auto = self.data_dir / "postgresql.auto.conf"
        lines = auto.read_text(encoding="utf-8").splitlines()
        for i in reversed(range(len(lines))):
            if lines[i].startswith("primary_conninfo = '"):
                lines[i] = lines[i][:-1] + f" application_name={application_name}'"
                break
        else:
            raise PostgresError("pg_basebackup -R wrote no primary_conninfo")
        auto.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _prepare_dir(self) -> Path:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
            self._owned_dir = True
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)  # noqa: S103 - the server user must reach its data dir
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, SERVER_USER, SERVER_USER)
        return self.base_dir

    def _trust_endpoint_logins(self) -> None:
        """Logins passed on by a cluster endpoint come from :data:`ENDPOINT_SOURCE`: there members of ``rds_iam``
        need no password (the endpoint has checked their IAM token, :mod:`tandem.twin.endpoints`); they have none
        anywhere else, as in Aurora. Everyone else logs in with a password, there as here."""
        with open(self.data_dir / "pg_hba.conf", "a", encoding="utf-8") as f:
            f.write(
                "\n# tandem: logins through the cluster endpoints (IAM tokens checked there)\n"
                f"host all +rds_iam {ENDPOINT_SOURCE}/32 trust\n"
                f"host all all {ENDPOINT_SOURCE}/32 scram-sha-256\n"
            )

    def _append_conf(self, lines: list[str]) -> None:
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# tandem local server\n" + "\n".join(lines) + "\n")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise PostgresError(f"PostgreSQL did not accept connections on port {self.port}")

    @property
    def ca_file(self) -> Path:
        """The certificate authority this server's certificate is signed by (clients verify against it: the
        functions run with ``LEDGER_DB_SSLMODE=verify-full``, as against Aurora with AWS's RDS roots)."""
        assert self.base_dir is not None
        return self.base_dir / "ca.crt"

    def _make_certificate(self) -> None:
        """A local certificate authority (kept beside the data dir: a standby rebuilt from a new primary keeps
        serving a certificate it signed) and the server's certificate for 127.0.0.1 and localhost."""
        assert self.base_dir is not None
        ca_key, ca_crt = self.base_dir / "ca.key", self.ca_file
        key, csr, crt = self.data_dir / "server.key", self.base_dir / "server.csr", self.data_dir / "server.crt"
        openssl = ["openssl"]
        subprocess.run(
            [*openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Tandem ledger CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(ca_key), "-out", str(ca_crt)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(csr)],
            check=True, capture_output=True,
        )  # fmt: skip
        extensions = self.base_dir / "server.ext"
        extensions.write_text(
            "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            encoding="utf-8",
        )
        subprocess.run(
            [*openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", str(extensions), "-out", str(crt)],
            check=True, capture_output=True,
        )  # fmt: skip
        csr.unlink()
        os.chmod(key, 0o600)
        os.chmod(ca_key, 0o600)
        if os.geteuid() == 0:
            for path in (key, crt):
                shutil.chown(path, SERVER_USER, SERVER_USER)

    def _run_as_owner_write(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o600)
        if os.geteuid() == 0:
            shutil.chown(path, SERVER_USER, SERVER_USER)

    def _server(self, *cmd: str, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(server_command(list(cmd)), capture_output=True, text=True, env=full_env, check=False)
        if proc.returncode != 0:
            log = ""
            if self.base_dir is not None and (self.base_dir / "server.log").exists():
                log = (self.base_dir / "server.log").read_text(errors="replace")[-2000:]
            raise PostgresError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}")


@contextlib.contextmanager
def running_postgres(**kwargs: object) -> Iterator[LocalPostgres]:
    server = LocalPostgres(**kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()

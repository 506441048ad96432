"""A throwaway local PostgreSQL server for tests, the drill and local invokes.

``initdb``/``pg_ctl`` refuse to run as root, so when we are root the server runs as the ``postgres``
system user (created by Debian's package). The server listens on loopback only, on a free port, with
password (SCRAM) authentication and TLS (a self-signed certificate) so the functions' TLS path is the one
exercised. Everything lives in one temporary directory that :meth:`LocalPostgres.stop` removes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
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

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
            self._owned_dir = True
        os.chmod(self.base_dir, 0o755)  # noqa: S103 - the server user must reach its data dir
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, SERVER_USER, SERVER_USER)
        pwfile = self.base_dir / "pwfile"
        self._run_as_owner_write(pwfile, self.password + "\n")
        try:
            self._server(
                pg_bin("initdb"), "-D", str(self.data_dir), "-U", self.user, "--pwfile", str(pwfile),
                "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync",
                "--locale=C.UTF-8",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base_dir}'",
            "fsync = on",
            "max_connections = 50",
            "wal_level = replica",
            "max_wal_senders = 4",
        ]
        if self.tls and shutil.which("openssl"):
            self._make_certificate()
            conf += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
        else:
            self.tls = False
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# tandem local server\n" + "\n".join(conf) + "\n")
        self._server(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.base_dir / "server.log"),
                     "-w", "-t", "30", "start")  # fmt: skip
        self._wait_ready()
        self._server(
            pg_bin("psql") if os.path.exists(pg_bin("psql")) else "psql",
            "-h", str(self.base_dir), "-p", str(self.port), "-U", self.user, "-d", "postgres", "-q",
            "-c", f"CREATE DATABASE {self.database}",
            env={"PGPASSWORD": self.password},
        )  # fmt: skip

    def stop(self) -> None:
        if self.base_dir is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(PostgresError):
                self._server(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        if self._owned_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise PostgresError(f"PostgreSQL did not accept connections on port {self.port}")

    def _make_certificate(self) -> None:
        key, crt = self.data_dir / "server.key", self.data_dir / "server.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(crt)],
            check=True, capture_output=True,
        )  # fmt: skip
        os.chmod(key, 0o600)
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
        proc = subprocess.run(_as_server_user(list(cmd)), capture_output=True, text=True, env=full_env, check=False)
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

"""The twin's cluster endpoints on a real PostgreSQL: IAM database authentication as Aurora does it at login.

A function's role (a member of ``rds_iam``) logs in with the IAM token it signs - and with nothing else, nowhere
else; the master user logs in with its password through the same endpoints; TLS only; an inactive writer
endpoint answers nobody.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import pytest
from botocore.credentials import Credentials

from tandem.localpg import LocalPostgres
from tandem.twin.endpoints import READER_HOST, WRITER_HOST, ClusterEndpoints
from tandem_core.database import IamTokenCredentials, LedgerConnector, sqlstate
from tandem_core.schema import migrate
from tandem_core.settings import LedgerDbSettings

REGION = "eu-west-1"
TWIN = Credentials("testing", "testing", "testing")  # what every function of the twin signs with


@pytest.fixture
def endpoints(pg_server: LocalPostgres, database: str, tmp_path: Path) -> Iterator[ClusterEndpoints]:
    admin = pg_server.connect(database)
    if not admin.run("SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'"):
        admin.run("CREATE ROLE rds_iam NOLOGIN")  # Aurora's own role
    migrate(admin)  # grants rds_iam to the functions' roles
    admin.close()
    assert pg_server.base_dir is not None
    tls = pg_server.data_dir
    cluster = ClusterEndpoints(pg_server.port, tmp_path / "writer", REGION, tls / "server.crt", tls / "server.key")
    cluster.open(True)
    cluster.start()
    yield cluster
    cluster.stop()


def settings(pg_server: LocalPostgres, database: str, host: str, **more: str) -> LedgerDbSettings:
    return LedgerDbSettings.from_env({
        "LEDGER_DB_HOST": host, "LEDGER_DB_PORT": str(pg_server.port), "LEDGER_DB_NAME": database,
        "LEDGER_DB_AUTH": "iam", "LEDGER_DB_USER": "tandem_processor", "LEDGER_DB_SSLMODE": "verify-full",
        "LEDGER_DB_SSLROOTCERT": str(pg_server.ca_file), "LEDGER_DB_TIMEOUT": "5", **more,
    })  # fmt: skip


def iam_login(db: LedgerDbSettings, credentials: Credentials = TWIN) -> pg8000.native.Connection:
    return LedgerConnector(db, IamTokenCredentials(db, REGION, credentials)).connection()


@pytest.mark.parametrize("host", [READER_HOST, WRITER_HOST])
def test_a_function_role_logs_in_with_its_iam_token_over_verified_tls(
    pg_server: LocalPostgres, database: str, endpoints: ClusterEndpoints, host: str
) -> None:
    conn = iam_login(settings(pg_server, database, host))
    assert conn.run("SELECT current_user, current_database()") == [["tandem_processor", database]]
    assert conn.run("SELECT count(*) FROM ledger_transaction") == [[0]]  # its grants, as its own role
    conn.close()


@pytest.mark.parametrize(
    ("credentials", "more"),
    [
        (Credentials("testing", "not-the-secret"), {}),  # signed by someone without the key
        (TWIN, {"LEDGER_DB_USER": "tandem_observer"}),  # a token for another role, presented for this one below
    ],
)
def test_a_token_that_is_not_this_roles_is_refused_as_aurora_refuses_it(
    pg_server: LocalPostgres, database: str, endpoints: ClusterEndpoints, credentials: Credentials,
    more: dict[str, str],
) -> None:  # fmt: skip
    signed = settings(pg_server, database, READER_HOST, **more)
    _, token = IamTokenCredentials(signed, REGION, credentials).credentials()
    with pytest.raises(pg8000.native.DatabaseError) as refused:
        pg8000.native.Connection(
            user="tandem_processor", password=token, host=READER_HOST, port=pg_server.port, database=database,
            ssl_context=_verified(pg_server), timeout=5,
        )  # fmt: skip
    assert sqlstate(refused.value) == "28P01"
    assert 'PAM authentication failed for user "tandem_processor"' in str(refused.value)


def test_a_function_role_cannot_log_in_past_the_endpoints_or_without_tls(
    pg_server: LocalPostgres, database: str, endpoints: ClusterEndpoints
) -> None:
    db = settings(pg_server, database, READER_HOST)
    _, token = IamTokenCredentials(db, REGION, TWIN).credentials()
    with pytest.raises(pg8000.native.DatabaseError) as direct:  # the server itself: no password works
        pg8000.native.Connection(
            user="tandem_processor", password=token, host="127.0.0.1", port=pg_server.port, database=database,
            ssl_context=_verified(pg_server), timeout=5,
        )  # fmt: skip
    assert sqlstate(direct.value) == "28P01"
    with pytest.raises(pg8000.native.DatabaseError) as plain:  # rds.force_ssl
        pg8000.native.Connection(
            user="tandem_processor", password=token, host=READER_HOST, port=pg_server.port, database=database,
            ssl_context=False, timeout=5,
        )  # fmt: skip
    assert sqlstate(plain.value) == "28000"


def test_the_master_user_logs_in_with_its_password_through_the_same_endpoints(
    pg_server: LocalPostgres, database: str, endpoints: ClusterEndpoints
) -> None:
    conn = pg8000.native.Connection(
        user=pg_server.user, password=pg_server.password, host=WRITER_HOST, port=pg_server.port, database=database,
        ssl_context=_verified(pg_server), timeout=5,
    )  # fmt: skip
    assert conn.run("SELECT current_user") == [[pg_server.user]]
    conn.close()


def test_an_inactive_writer_endpoint_answers_nobody_while_the_reader_endpoint_does(
    pg_server: LocalPostgres, database: str, endpoints: ClusterEndpoints
) -> None:
    endpoints.open(False)  # this cluster is a global secondary now
    with pytest.raises((OSError, pg8000.native.InterfaceError)):  # accepted and closed at once
        iam_login(settings(pg_server, database, WRITER_HOST, LEDGER_DB_TIMEOUT="2"))
    assert iam_login(settings(pg_server, database, READER_HOST)).run("SELECT 1") == [[1]]


def _verified(pg_server: LocalPostgres) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pg_server.ca_file))


def test_the_endpoints_outlive_connections_killed_on_both_sides(
    pg_server: LocalPostgres, database: str, endpoints: ClusterEndpoints
) -> None:
    """Sessions whose server process is killed under them while their client goes too: the endpoint stays."""
    admin = pg_server.connect(database)
    db = settings(pg_server, database, WRITER_HOST)
    for _ in range(30):
        conn = iam_login(db)
        pid = conn.run("SELECT pg_backend_pid()")[0][0]
        admin.run("SELECT pg_terminate_backend(:pid)", pid=pid)
        conn.close()
    admin.close()
    assert iam_login(db).run("SELECT current_user") == [["tandem_processor"]]

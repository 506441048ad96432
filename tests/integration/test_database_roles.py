"""Least privilege inside the ledger database, on a real PostgreSQL: each function's role does its job and
nothing more, and the ledger is append-only even for its owner.

Each test logs in over TLS as a login role that is a member of the role a function uses (``tandem_processor``,
``tandem_observer``: created by the migrations), as the function itself would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pg8000.native
import pytest
from moto import mock_aws

from tandem.localpg import LocalPostgres
from tandem_core.aurora_observer import LedgerAurora
from tandem_core.database import LedgerConnector, SecretCredentials, sqlstate
from tandem_core.ledger import Ledger, Outcome
from tandem_core.models import Entry, parse_transaction
from tandem_core.schema import migrate
from tandem_core.settings import LedgerDbSettings

REGION = "us-east-1"
INSUFFICIENT_PRIVILEGE = "42501"


def transfer(n: int, a: str = "acc-1", b: str = "acc-2", amount: str = "10.00") -> Entry:
    body = {"transaction_id": str(uuid.UUID(int=n)), "account_id": a, "counterparty_id": b, "amount": amount,
            "currency": "EUR", "created_at": "2026-12-07T10:00:00Z"}  # fmt: skip
    return Entry(parse_transaction(json.dumps(body)), f"m{n}")


@pytest.fixture
def owner(db: pg8000.native.Connection) -> pg8000.native.Connection:
    """The schema owner (the cluster's master user), after the deploy's migrations."""
    migrate(db)
    return db


@pytest.fixture
def login(pg_server: LocalPostgres, database: str, owner: pg8000.native.Connection) -> Iterator[Callable[[str], Any]]:
    """``login(job)``: a connector that logs in, over TLS and with its password in Secrets Manager, as a new
    member of the role ``tandem_<job>``."""
    made: list[str] = []
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)

        def as_member_of(job: str) -> LedgerConnector:
            user, password = f"{job}_{database}_{len(made)}", uuid.uuid4().hex
            owner.run(f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE tandem_{job}")
            made.append(user)
            arn = sm.create_secret(Name=user, SecretString=json.dumps({"username": user, "password": password}))
            settings = LedgerDbSettings.from_env({
                "LEDGER_DB_HOST": "127.0.0.1", "LEDGER_DB_PORT": str(pg_server.port), "LEDGER_DB_NAME": database,
                "LEDGER_DB_SECRET_ARN": arn["ARN"], "LEDGER_DB_SSLMODE": "require",
            })  # fmt: skip
            return LedgerConnector(settings, SecretCredentials(sm, arn["ARN"]))

        yield as_member_of
    owner.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(CAST(:u AS text[]))", u=made)
    for user in made:
        owner.run(f"DROP OWNED BY {user}")
        owner.run(f"DROP ROLE {user}")


def refused(conn: pg8000.native.Connection, sql: str) -> str:
    """The SQLSTATE with which the database refuses ``sql`` (the test fails if it is accepted)."""
    with pytest.raises(pg8000.native.DatabaseError) as caught:
        conn.run(sql)
    return sqlstate(caught.value) or ""


def test_the_processor_applies_batches_and_can_do_nothing_else(
    login: Callable[[str], LedgerConnector], owner: pg8000.native.Connection
) -> None:
    connector = login("processor")
    ledger = Ledger(connector)
    applied = ledger.apply([transfer(1), transfer(2, amount="5.00")])
    assert applied.outcomes == {"m1": Outcome.COMMITTED, "m2": Outcome.COMMITTED}
    assert ledger.apply([transfer(1)]).outcomes == {"m1": Outcome.DUPLICATE}
    conn = connector.connection()
    assert conn.run("SELECT count(*) FROM ledger_transaction") == [[2]]  # it reads back what it applied
    for sql in (
        "CREATE TABLE sneaky (x int)",
        "CREATE TEMPORARY TABLE sneaky (x int)",
        "ALTER TABLE ledger_transaction ADD COLUMN note text",
        "DROP TABLE account_balance",
        "DELETE FROM ledger_transaction",
        f"UPDATE ledger_transaction SET amount_minor = 1 WHERE transaction_id = '{uuid.UUID(int=1)}'",
        "TRUNCATE ledger_transaction",
        "UPDATE account_balance SET balance_minor = 0",
        "DELETE FROM account_balance",
        "INSERT INTO account_balance VALUES ('acc-9', 'EUR', 1000000)",
        "INSERT INTO ledger_transaction (transaction_id, account_id, counterparty_id, amount_minor, currency,"
        f" created_at, payload_hash, message_id) VALUES ('{uuid.uuid4()}', 'a', 'b', 1, 'EUR', now(),"
        f" '{'0' * 64}', 'x')",  # only through the exactly-once statement, which moves the balances too
        "SELECT * FROM account_balance",
        "SELECT * FROM replication_heartbeat",
        "INSERT INTO replication_heartbeat (region, written_at) VALUES ('us-east-1', now())",
        "INSERT INTO schema_migration (version, name, checksum) VALUES (99, 'x', 'y')",
    ):
        assert refused(conn, sql) == INSUFFICIENT_PRIVILEGE, sql
    assert owner.run("SELECT account_id, balance_minor FROM account_balance ORDER BY account_id") == [
        ["acc-1", -1500], ["acc-2", 1500],
    ]  # fmt: skip


def test_the_observer_writes_its_heartbeat_and_sees_no_ledger(
    login: Callable[[str], LedgerConnector], owner: pg8000.native.Connection
) -> None:
    connector = login("observer")
    observation = LedgerAurora(connector, REGION).observe()  # a single server: the writer, so it beats
    assert observation.reachable, observation.error
    assert (observation.writer, observation.heartbeat_written) == (True, True)
    assert owner.run("SELECT region, beats FROM replication_heartbeat") == [[REGION, 1]]
    conn = connector.connection()
    for sql in (
        "SELECT * FROM ledger_transaction",
        "SELECT * FROM account_balance",
        "SELECT * FROM ledger_apply(CAST('{}' AS uuid[]), CAST('{}' AS text[]), CAST('{}' AS text[]),"
        " CAST('{}' AS bigint[]), CAST('{}' AS text[]), CAST('{}' AS timestamptz[]), CAST('{}' AS text[]),"
        " CAST('{}' AS text[]))",
        "DELETE FROM replication_heartbeat",
        "CREATE TABLE sneaky (x int)",
        "CREATE TEMPORARY TABLE sneaky (x int)",
    ):
        assert refused(conn, sql) == INSUFFICIENT_PRIVILEGE, sql


def test_the_ledger_is_append_only_even_for_its_owner_unless_it_says_so(
    login: Callable[[str], LedgerConnector], owner: pg8000.native.Connection
) -> None:
    Ledger(login("processor")).apply([transfer(1), transfer(2, "acc-2", "acc-3")])
    first = str(uuid.UUID(int=1))
    for sql in (
        f"UPDATE ledger_transaction SET amount_minor = 1 WHERE transaction_id = '{first}'",
        f"DELETE FROM ledger_transaction WHERE transaction_id = '{first}'",
        "TRUNCATE ledger_transaction",
    ):
        with pytest.raises(pg8000.native.DatabaseError) as caught:
            owner.run(sql)
        assert sqlstate(caught.value) == INSUFFICIENT_PRIVILEGE
        assert "append-only" in str(caught.value), sql
    assert owner.run("SELECT count(*) FROM ledger_transaction") == [[2]]
    owner.run("BEGIN")  # a deliberate amendment, said in the transaction that makes it
    owner.run("SET LOCAL tandem.ledger_amend = 'on'")
    owner.run(f"UPDATE ledger_transaction SET message_id = 'amended' WHERE transaction_id = '{first}'")
    owner.run("COMMIT")
    assert owner.run(f"SELECT message_id FROM ledger_transaction WHERE transaction_id = '{first}'") == [["amended"]]
    with pytest.raises(pg8000.native.DatabaseError):  # SET LOCAL ended with its transaction
        owner.run(f"DELETE FROM ledger_transaction WHERE transaction_id = '{first}'")


def test_every_balance_is_explained_by_the_ledger_rows(
    login: Callable[[str], LedgerConnector], owner: pg8000.native.Connection
) -> None:
    ledger = Ledger(login("processor"))
    accounts = ["acc-1", "acc-2", "acc-3", "merchant"]
    for n in range(1, 41):
        a, b = accounts[n % 4], accounts[(n * 3 + 1) % 4]
        if a != b:
            replayed = transfer(n, a, b, f"{n}.25")
            ledger.apply([replayed, replayed])  # a replay in the same batch: applied once
    unexplained = owner.run(
        "SELECT b.account_id FROM account_balance b LEFT JOIN ("
        " SELECT account, currency, sum(delta) AS total FROM ("
        "  SELECT account_id AS account, currency, -amount_minor AS delta FROM ledger_transaction"
        "  UNION ALL SELECT counterparty_id, currency, amount_minor FROM ledger_transaction) legs"
        " GROUP BY account, currency) l ON l.account = b.account_id AND l.currency = b.currency"
        " WHERE l.total IS DISTINCT FROM b.balance_minor"
    )
    assert unexplained == []
    assert owner.run("SELECT sum(balance_minor) FROM account_balance") == [[0]]

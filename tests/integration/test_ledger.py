"""The ledger on a real PostgreSQL: exactly-once, conflicts, batching, migrations, reconnects."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pg8000.native
import pytest
from moto import mock_aws

from tandem.localpg import LocalPostgres
from tandem_core.database import LedgerConnector, SecretCredentials
from tandem_core.ledger import Ledger, Outcome, apply_batch
from tandem_core.models import Entry, parse_transaction
from tandem_core.schema import Migration, MigrationError, load_migrations, migrate
from tandem_core.settings import LedgerDbSettings


def txn(n: int, amount: str = "10.00", a: str = "acc-1", b: str = "acc-2", currency: str = "USD") -> Any:
    return parse_transaction(
        json.dumps(
            {
                "transaction_id": str(uuid.UUID(int=n)),
                "account_id": a,
                "counterparty_id": b,
                "amount": amount,
                "currency": currency,
                "created_at": "2026-11-28T10:15:00Z",
            }
        )
    )


def balances(db: pg8000.native.Connection) -> dict[tuple[str, str], int]:
    rows = db.run("SELECT account_id, currency, balance_minor FROM account_balance") or []
    return {(str(a), str(c)): int(v) for a, c, v in rows}


@pytest.fixture
def ledger_db(db: pg8000.native.Connection) -> pg8000.native.Connection:
    migrate(db)
    return db


class CountingRunner:
    """Counts statements sent to the server, to prove one round trip per batch."""

    def __init__(self, conn: pg8000.native.Connection) -> None:
        self.conn = conn
        self.statements = 0

    def run(self, sql: str, **params: object) -> Any:
        self.statements += 1
        return self.conn.run(sql, **params)


def test_a_batch_is_applied_in_one_round_trip(ledger_db: pg8000.native.Connection) -> None:
    runner = CountingRunner(ledger_db)
    entries = [Entry(txn(i, f"{i}.00"), f"m{i}") for i in range(1, 11)]
    outcomes = apply_batch(runner, entries).outcomes
    assert runner.statements == 1
    assert set(outcomes.values()) == {Outcome.COMMITTED}
    assert balances(ledger_db) == {("acc-1", "USD"): -5500, ("acc-2", "USD"): 5500}


def test_a_replay_is_a_no_op(ledger_db: pg8000.native.Connection) -> None:
    entries = [Entry(txn(1), "m1"), Entry(txn(2, "1", currency="JPY"), "m2")]
    apply_batch(ledger_db, entries)
    before = balances(ledger_db)
    again = apply_batch(
        ledger_db, [Entry(txn(1), "m1-redelivered"), Entry(txn(2, "1", currency="JPY"), "m2b")]
    ).outcomes
    assert set(again.values()) == {Outcome.DUPLICATE}
    assert balances(ledger_db) == before
    assert ledger_db.run("SELECT count(*) FROM ledger_transaction") == [[2]]


def test_same_id_different_payload_is_a_conflict_and_the_first_stays(
    ledger_db: pg8000.native.Connection,
) -> None:
    apply_batch(ledger_db, [Entry(txn(1, "10.00"), "m1")])
    out = apply_batch(ledger_db, [Entry(txn(1, "99.00"), "m2")]).outcomes
    assert out == {"m2": Outcome.CONFLICT}
    assert balances(ledger_db)[("acc-1", "USD")] == -1000


def test_a_retry_that_restamps_created_at_is_the_same_transfer(ledger_db: pg8000.native.Connection) -> None:
    """Identity is (id, accounts, amount, currency); a producer's retry may re-stamp ``created_at``. The ledger
    keeps the first row and says what it holds, so the status can follow it (finding 2 of the backlog issue)."""
    first = txn(1, "10.00")
    apply_batch(ledger_db, [Entry(first, "m1")])
    restamped = first.model_copy(update={"created_at": "2026-11-28T10:19:59.5+01:00"})
    applied = apply_batch(ledger_db, [Entry(restamped, "m2")])
    assert applied.outcomes == {"m2": Outcome.DUPLICATE}
    held = applied.held[first.transaction_id]
    assert (held.message_id, held.transaction.payload_hash) == ("m1", first.payload_hash)
    assert held.transaction.created_at_utc == first.created_at_utc
    assert balances(ledger_db)[("acc-1", "USD")] == -1000
    other = apply_batch(ledger_db, [Entry(txn(1, "10.01"), "m3")])
    assert other.outcomes == {"m3": Outcome.CONFLICT}
    assert other.held[first.transaction_id].message_id == "m1"  # what the ledger holds under the id


def test_repeats_inside_one_batch_apply_once(ledger_db: pg8000.native.Connection) -> None:
    out = apply_batch(
        ledger_db,
        [Entry(txn(1), "a"), Entry(txn(1), "b"), Entry(txn(1, "5.00"), "c"), Entry(txn(2, "1.00"), "d")],
    ).outcomes
    assert out == {
        "a": Outcome.COMMITTED,
        "b": Outcome.DUPLICATE,
        "c": Outcome.CONFLICT,
        "d": Outcome.COMMITTED,
    }
    assert balances(ledger_db)[("acc-2", "USD")] == 1100


def test_concurrent_writers_of_the_same_transactions_apply_each_once(
    pg_server: LocalPostgres, database: str, ledger_db: pg8000.native.Connection
) -> None:
    entries = [Entry(txn(i, "1.00", a=f"acc-{i % 3}", b=f"acc-{i % 3 + 3}"), f"m{i}") for i in range(1, 41)]
    results: list[dict[str, Outcome]] = []
    errors: list[BaseException] = []

    def worker(order: int) -> None:
        conn = pg_server.connect(database)
        try:
            batch = entries if order == 0 else list(reversed(entries))
            for i in range(0, len(batch), 10):
                results.append(apply_batch(conn, batch[i : i + 10]).outcomes)
        except BaseException as exc:  # deadlocks would surface here
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n % 2,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    committed = sum(1 for r in results for o in r.values() if o is Outcome.COMMITTED)
    assert committed == 40
    assert ledger_db.run("SELECT count(*), sum(amount_minor) FROM ledger_transaction") == [[40, 4000]]
    assert sum(balances(ledger_db).values()) == 0


def test_migrations_apply_once_and_refuse_an_edited_file(db: pg8000.native.Connection) -> None:
    migrations = load_migrations()
    assert migrate(db) == [m.version for m in migrations]
    assert migrate(db) == []
    edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in migrations]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(db, edited)


def test_a_failing_migration_leaves_nothing_half_applied(db: pg8000.native.Connection) -> None:
    migrate(db)
    broken = [*load_migrations(), Migration(9999, "broken", "CREATE TABLE half (x int); SELECT 1/0;")]
    with pytest.raises(pg8000.native.DatabaseError):
        migrate(db, broken)
    assert db.run("SELECT to_regclass('half') IS NULL") == [[True]]
    assert db.run("SELECT max(version) FROM schema_migration") == [[max(m.version for m in load_migrations())]]


@pytest.fixture
def app_role(pg_server: LocalPostgres, database: str, ledger_db: pg8000.native.Connection) -> Iterator[dict[str, Any]]:
    """A login role of the processor's with its password in (moto's) Secrets Manager."""
    role, password = f"app_{database}", uuid.uuid4().hex
    ledger_db.run(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    ledger_db.run(f"GRANT tandem_processor TO {role}")  # the processor's privileges, nothing more
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(Name=role, SecretString=json.dumps({"username": role, "password": password}))["ARN"]
        settings = LedgerDbSettings.from_env(
            {
                "LEDGER_DB_HOST": "127.0.0.1",
                "LEDGER_DB_PORT": str(pg_server.port),
                "LEDGER_DB_NAME": database,
                "LEDGER_DB_SECRET_ARN": arn,
                "LEDGER_DB_SSLMODE": "require",
            }
        )
        yield {"role": role, "sm": sm, "arn": arn, "settings": settings}
    ledger_db.run(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
    ledger_db.run(f"DROP OWNED BY {role}")
    ledger_db.run(f"DROP ROLE {role}")


def test_connector_uses_tls_and_the_secret(app_role: dict[str, Any]) -> None:
    connector = LedgerConnector(app_role["settings"], SecretCredentials(app_role["sm"], app_role["arn"]))
    conn = connector.connection()
    assert conn.run("SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [
        [app_role["role"], True]
    ]
    assert connector.connection() is conn  # reused across invocations
    connector.discard()


def test_verify_full_checks_the_servers_certificate(app_role: dict[str, Any], pg_server: LocalPostgres) -> None:
    """Defect 9 of a real deploy: ``require`` encrypts but accepts any server. ``verify-full`` connects to the
    server whose certificate chains to the given CA and names the host, and refuses the same server when the
    roots are others (here AWS's RDS roots, as a function in AWS would use them against an impostor)."""
    verified = app_role["settings"].model_copy(
        update={"sslmode": "verify-full", "sslrootcert": str(pg_server.ca_file), "region": "us-east-1"}
    )
    connector = LedgerConnector(verified, SecretCredentials(app_role["sm"], app_role["arn"]))
    assert connector.connection().run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [[True]]
    connector.discard()
    against_rds = verified.model_copy(update={"sslrootcert": None})
    impostor = LedgerConnector(against_rds, SecretCredentials(app_role["sm"], app_role["arn"]))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        impostor.connection()


def test_ledger_reconnects_after_the_connection_is_killed(
    app_role: dict[str, Any], ledger_db: pg8000.native.Connection
) -> None:
    connector = LedgerConnector(app_role["settings"], SecretCredentials(app_role["sm"], app_role["arn"]))
    ledger = Ledger(connector)
    assert ledger.apply([Entry(txn(1), "m1")]).outcomes == {"m1": Outcome.COMMITTED}
    ledger_db.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r", r=app_role["role"])
    assert ledger.apply([Entry(txn(2), "m2"), Entry(txn(1), "m1")]).outcomes == {
        "m2": Outcome.COMMITTED,
        "m1": Outcome.DUPLICATE,
    }


def test_a_rotated_secret_is_fetched_again(app_role: dict[str, Any], ledger_db: pg8000.native.Connection) -> None:
    credentials = SecretCredentials(app_role["sm"], app_role["arn"])
    connector = LedgerConnector(app_role["settings"], credentials)
    connector.connection()
    connector.discard()
    new_password = uuid.uuid4().hex
    ledger_db.run(f"ALTER ROLE {app_role['role']} PASSWORD '{new_password}'")
    app_role["sm"].put_secret_value(
        SecretId=app_role["arn"],
        SecretString=json.dumps({"username": app_role["role"], "password": new_password}),
    )
    conn = connector.connection()  # the cached password fails (28P01); the secret is read again
    assert conn.run("SELECT current_user") == [[app_role["role"]]]
    connector.discard()


class _Recorded:
    """Credentials that note the thread asking for them and can fail the first ``failures`` times."""

    def __init__(self, inner: SecretCredentials, failures: int = 0) -> None:
        self.inner, self.failures = inner, failures
        self.threads: list[str] = []

    def credentials(self, *, refresh: bool = False) -> tuple[str, str]:
        self.threads.append(threading.current_thread().name)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("secret unavailable")
        return self.inner.credentials(refresh=refresh)


def test_a_connection_opened_ahead_is_the_one_handed_out(app_role: dict[str, Any]) -> None:
    credentials = _Recorded(SecretCredentials(app_role["sm"], app_role["arn"]))
    connector = LedgerConnector(app_role["settings"], credentials)
    connector.open_ahead()
    connector.open_ahead()  # a second call while the first is on its way opens nothing more
    conn = connector.connection()
    assert credentials.threads == ["ledger-connect"]  # the login ran on the background thread, once
    assert conn.run("SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [
        [app_role["role"], True]
    ]
    assert connector.connection() is conn
    connector.discard()


def test_an_attempt_ahead_that_failed_is_made_again_by_the_caller(app_role: dict[str, Any]) -> None:
    credentials = _Recorded(SecretCredentials(app_role["sm"], app_role["arn"]), failures=1)
    connector = LedgerConnector(app_role["settings"], credentials)
    connector.open_ahead()
    conn = connector.connection()
    assert credentials.threads == ["ledger-connect", threading.current_thread().name]
    assert conn.run("SELECT current_user") == [[app_role["role"]]]
    connector.discard()


def test_what_is_prepared_ahead_runs_on_the_thread_and_a_failure_leaves_no_connection_behind(
    app_role: dict[str, Any], ledger_db: pg8000.native.Connection
) -> None:
    connector = LedgerConnector(app_role["settings"], SecretCredentials(app_role["sm"], app_role["arn"]))
    prepared: list[tuple[str, int]] = []

    def prepare(conn: pg8000.native.Connection) -> None:
        prepared.append((threading.current_thread().name, conn.run("SELECT pg_backend_pid()")[0][0]))

    connector.open_ahead(prepare)
    conn = connector.connection()
    assert prepared == [("ledger-connect", conn.run("SELECT pg_backend_pid()")[0][0])]
    connector.discard()

    def failing(conn: pg8000.native.Connection) -> None:
        prepare(conn)
        raise RuntimeError("schema check failed")

    connector.open_ahead(failing)
    conn = connector.connection()  # opened again by the caller, without the failed preparation
    ahead_pid = prepared[-1][1]
    assert conn.run("SELECT pg_backend_pid()")[0][0] != ahead_pid
    still_open = "SELECT count(*) FROM pg_stat_activity WHERE pid = :p"
    deadline = time.monotonic() + 5  # the server ends a closed session's backend asynchronously
    while ledger_db.run(still_open, p=ahead_pid) != [[0]] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger_db.run(still_open, p=ahead_pid) == [[0]]  # the failed attempt's connection was closed
    connector.discard()


def test_a_ledger_opened_ahead_commits_its_first_batch(app_role: dict[str, Any]) -> None:
    ledger = Ledger(LedgerConnector(app_role["settings"], SecretCredentials(app_role["sm"], app_role["arn"])))
    ledger.open_ahead()
    assert ledger.apply([Entry(txn(1), "m1")]).outcomes == {"m1": Outcome.COMMITTED}


def test_a_database_down_ahead_of_time_fails_the_caller_loudly(app_role: dict[str, Any]) -> None:
    settings = app_role["settings"].model_copy(update={"port": 1, "timeout": 1.0})
    connector = LedgerConnector(settings, SecretCredentials(app_role["sm"], app_role["arn"]))
    connector.open_ahead()
    with pytest.raises((OSError, pg8000.native.InterfaceError)):
        connector.connection()


def test_a_database_that_is_down_fails_the_batch_loudly(app_role: dict[str, Any]) -> None:
    settings = app_role["settings"].model_copy(update={"port": 1, "timeout": 1.0})
    ledger = Ledger(LedgerConnector(settings, SecretCredentials(app_role["sm"], app_role["arn"])))
    with pytest.raises((OSError, pg8000.native.InterfaceError)):
        ledger.apply([Entry(txn(1), "m1")])


# --- a record the database refuses fails alone (issue 7) ------------------------------------------------------


@pytest.fixture
def blocking_ledger(ledger_db: pg8000.native.Connection) -> pg8000.native.Connection:
    """The ledger with a test-only rule: 'acc-blocked' may not send, which validation knows nothing about."""
    ledger_db.run("ALTER TABLE ledger_transaction ADD CONSTRAINT test_no_blocked CHECK (account_id <> 'acc-blocked')")
    return ledger_db


def committed_rows(db: pg8000.native.Connection) -> dict[str, str]:
    rows = db.run("SELECT CAST(transaction_id AS text), message_id FROM ledger_transaction") or []
    return {str(t): str(m) for t, m in rows}


def test_a_record_the_database_refuses_fails_alone_and_the_others_commit_once(
    blocking_ledger: pg8000.native.Connection,
) -> None:
    entries = [Entry(txn(i, f"{i}.00"), f"m{i}") for i in range(1, 11)]
    entries[3] = Entry(txn(4, "4.00", a="acc-blocked"), "m4")  # a check constraint
    entries[7] = Entry(txn(8, "8.00"), "m8\x00")  # PostgreSQL text cannot hold a NUL byte
    runner = CountingRunner(blocking_ledger)
    applied = apply_batch(runner, entries)
    good = [e for e in entries if e.message_id not in {"m4", "m8\x00"}]
    assert applied.outcomes == {
        **{e.message_id: Outcome.COMMITTED for e in good},
        "m4": Outcome.REJECTED_BY_LEDGER,
        "m8\x00": Outcome.REJECTED_BY_LEDGER,
    }
    assert applied.refused["m4"].startswith('new row for relation "ledger_transaction" violates check constraint')
    assert applied.refused["m4"].endswith("(SQLSTATE 23514)")
    assert "0x00" in applied.refused["m8\x00"]
    assert applied.refused["m8\x00"].endswith("(SQLSTATE 22021)")
    assert all(reason.isprintable() for reason in applied.refused.values())
    assert runner.statements <= 2 * len(entries)  # bisection: a handful of statements, and only on error
    assert committed_rows(blocking_ledger) == {e.transaction.transaction_id: e.message_id for e in good}
    total = sum(e.transaction.amount_minor for e in good)
    assert balances(blocking_ledger) == {("acc-1", "USD"): -total, ("acc-2", "USD"): total}

    again = apply_batch(blocking_ledger, entries)  # SQS redelivers the refused ones (here: all of them)
    assert again.outcomes == {
        **{e.message_id: Outcome.DUPLICATE for e in good},
        "m4": Outcome.REJECTED_BY_LEDGER,
        "m8\x00": Outcome.REJECTED_BY_LEDGER,
    }
    assert balances(blocking_ledger) == {("acc-1", "USD"): -total, ("acc-2", "USD"): total}
    assert blocking_ledger.run("SELECT count(*) FROM ledger_transaction") == [[8]]


def test_a_clean_batch_on_the_same_ledger_is_still_one_round_trip(blocking_ledger: pg8000.native.Connection) -> None:
    runner = CountingRunner(blocking_ledger)
    assert set(apply_batch(runner, [Entry(txn(i), f"m{i}") for i in range(1, 11)]).outcomes.values()) == {
        Outcome.COMMITTED
    }
    assert runner.statements == 1


def test_repeats_are_judged_against_the_stored_row_however_the_batch_is_split(
    blocking_ledger: pg8000.native.Connection,
) -> None:
    entries = [
        Entry(txn(1, "10.00"), "first"),  # written (first half)
        Entry(txn(2, "1.00", a="acc-blocked"), "blocked"),
        Entry(txn(3, "1.00"), "m3"),
        Entry(txn(4, "1.00"), "m4"),
        Entry(txn(5, "1.00"), "m5"),
        Entry(txn(6, "1.00"), "m6"),
        Entry(txn(1, "99.00"), "conflict"),  # same id, other content, in the other half
        Entry(txn(1, "10.00"), "repeat"),  # same id, same content, in the other half
    ]
    out = apply_batch(blocking_ledger, entries).outcomes
    assert out == {
        "first": Outcome.COMMITTED,
        "blocked": Outcome.REJECTED_BY_LEDGER,
        "m3": Outcome.COMMITTED,
        "m4": Outcome.COMMITTED,
        "m5": Outcome.COMMITTED,
        "m6": Outcome.COMMITTED,
        "conflict": Outcome.CONFLICT,
        "repeat": Outcome.DUPLICATE,
    }
    assert committed_rows(blocking_ledger)[str(uuid.UUID(int=1))] == "first"
    assert balances(blocking_ledger)[("acc-2", "USD")] == 1000 + 4 * 100


def test_when_the_written_occurrence_is_refused_the_next_one_takes_its_place(
    blocking_ledger: pg8000.native.Connection,
) -> None:
    entries = [
        Entry(txn(1, "10.00"), "nul\x00"),  # refused for its message id, not its content
        Entry(txn(1, "10.00"), "clean"),  # the same transfer under a clean message id: written instead
        Entry(txn(1, "99.00"), "other"),  # judged against what was written
        Entry(txn(2, "1.00", a="acc-blocked"), "blocked-a"),
        Entry(txn(2, "1.00", a="acc-blocked"), "blocked-b"),  # the same refusal again
    ]
    applied = apply_batch(blocking_ledger, entries)
    assert applied.outcomes == {
        "nul\x00": Outcome.REJECTED_BY_LEDGER,
        "clean": Outcome.COMMITTED,
        "other": Outcome.CONFLICT,
        "blocked-a": Outcome.REJECTED_BY_LEDGER,
        "blocked-b": Outcome.REJECTED_BY_LEDGER,
    }
    assert set(applied.refused) == {"nul\x00", "blocked-a", "blocked-b"}
    assert committed_rows(blocking_ledger) == {str(uuid.UUID(int=1)): "clean"}


def test_a_balance_that_would_leave_bigint_is_refused_alone(ledger_db: pg8000.native.Connection) -> None:
    ledger_db.run("INSERT INTO account_balance VALUES ('acc-whale', 'USD', 9223372036854775000)")
    entries = [Entry(txn(1, "1.00"), "m1"), Entry(txn(2, "50.00", b="acc-whale"), "m2"), Entry(txn(3, "1.00"), "m3")]
    applied = apply_batch(ledger_db, entries)
    assert applied.outcomes == {"m1": Outcome.COMMITTED, "m2": Outcome.REJECTED_BY_LEDGER, "m3": Outcome.COMMITTED}
    assert applied.refused["m2"] == "bigint out of range (SQLSTATE 22003)"
    assert balances(ledger_db)[("acc-whale", "USD")] == 9223372036854775000


def test_a_schema_error_still_fails_the_whole_batch(ledger_db: pg8000.native.Connection) -> None:
    ledger_db.run("ALTER TABLE account_balance RENAME COLUMN balance_minor TO renamed")  # 42703: a bug, not data
    with pytest.raises(pg8000.native.DatabaseError) as err:
        apply_batch(ledger_db, [Entry(txn(1), "m1"), Entry(txn(2), "m2")])
    assert err.value.args[0]["C"] == "42703"
    assert ledger_db.run("SELECT count(*) FROM ledger_transaction") == [[0]]


class BreaksAfterFirstStatement:
    """The first statement reaches the server (and is refused for its data); then the connection is gone."""

    def __init__(self, conn: pg8000.native.Connection) -> None:
        self.conn = conn
        self.statements = 0

    def run(self, sql: str, **params: object) -> Any:
        self.statements += 1
        if self.statements > 1:
            raise pg8000.native.InterfaceError("network error")
        return self.conn.run(sql, **params)


def test_a_connectivity_failure_while_isolating_still_fails_the_whole_batch(
    blocking_ledger: pg8000.native.Connection,
) -> None:
    entries = [Entry(txn(1), "m1"), Entry(txn(2, a="acc-blocked"), "m2"), Entry(txn(3), "m3")]
    with pytest.raises(pg8000.native.InterfaceError):
        apply_batch(BreaksAfterFirstStatement(blocking_ledger), entries)
    assert blocking_ledger.run("SELECT count(*) FROM ledger_transaction") == [[0]]


def test_the_ledger_isolates_refusals_and_keeps_the_connection(
    app_role: dict[str, Any], blocking_ledger: pg8000.native.Connection
) -> None:
    connector = LedgerConnector(app_role["settings"], SecretCredentials(app_role["sm"], app_role["arn"]))
    ledger = Ledger(connector)
    conn = connector.connection()
    applied = ledger.apply([Entry(txn(1), "m1"), Entry(txn(2, a="acc-blocked"), "m2")])
    assert applied.outcomes == {"m1": Outcome.COMMITTED, "m2": Outcome.REJECTED_BY_LEDGER}
    assert connector.connection() is conn  # a refusal is not a reason to reconnect
    connector.discard()


def test_a_client_side_error_mid_message_drops_the_connection(
    app_role: dict[str, Any], ledger_db: pg8000.native.Connection
) -> None:
    """pg8000 may have sent half a message when encoding fails; a connection out of step must not be reused."""
    connector = LedgerConnector(app_role["settings"], SecretCredentials(app_role["sm"], app_role["arn"]))
    ledger = Ledger(connector)
    first = connector.connection()
    with pytest.raises(UnicodeEncodeError):
        ledger.apply([Entry(txn(1), "m\ud800")])  # no SQS message id looks like this; the handler refuses it
    assert ledger.apply([Entry(txn(2), "m2")]).outcomes == {"m2": Outcome.COMMITTED}
    assert connector.connection() is not first
    connector.discard()

"""The replication monitor against real PostgreSQL streaming replication (and moto for the AWS side).

A primary ("us-east-1", the Aurora writer) and a streaming standby ("us-west-2", the DR secondary) carry the
twin's emulation of ``aurora_global_db_status()`` and the ledger schema. Lag here is real: WAL replay is
paused on the standby while the primary keeps committing.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pg8000.native
import pytest
from moto import mock_aws

from replication_monitor import app
from replication_monitor.probe import HttpProber
from tandem.lambda_runtime import LambdaContext
from tandem.local import ledger_table_keys
from tandem.localpg import LocalPostgres
from tandem_core import clients
from tandem_core.aurora_observer import LedgerAurora, ledger_aurora_from_env
from tandem_core.database import LedgerConnector, SecretCredentials
from tandem_core.heartbeat import heartbeat_key, to_attributes
from tandem_core.readiness import readiness_key
from tandem_core.schema import migrate
from tandem_core.settings import AwsSettings, LedgerDbSettings
from tests.conftest import ROOT, load_event

PRIMARY, DR = "us-east-1", "us-west-2"
EMULATION = ROOT / "tandem" / "twin" / "aurora_global_db_status.sql"
AURORA_COLUMNS = [
    "aws_region", "highest_lsn_written", "durability_lag_in_msec", "rpo_lag_in_msec", "last_lag_calculation_time",
    "feedback_epoch", "feedback_xmin",
]  # fmt: skip


def eventually[T](probe: Callable[[], T], until: Callable[[T], bool], what: str, timeout: float = 60.0) -> T:
    """Poll ``probe`` until ``until`` holds for its value (the value is what the test then asserts on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}; last value: {value!r}")
        time.sleep(0.2)


def set_region(conn: pg8000.native.Connection, region: str) -> None:
    """The server's own region, as the twin sets it (a per-server setting: it must not replicate)."""
    conn.run(f"SET tandem.aws_region = '{region}'")  # PostgreSQL 15 wants the placeholder known first
    conn.run(f"ALTER SYSTEM SET tandem.aws_region = '{region}'")
    conn.run("SELECT pg_reload_conf()")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[LocalPostgres, LocalPostgres]]:
    primary = LocalPostgres(database="ledger")
    primary.start()
    standby = LocalPostgres()
    try:
        conn = primary.connect()
        set_region(conn, PRIMARY)
        conn.run(EMULATION.read_text(encoding="utf-8"))
        migrate(conn)
        conn.close()
        standby.standby_of(primary, application_name=DR)
        conn = standby.connect()
        set_region(conn, DR)
        conn.close()
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()


@pytest.fixture
def writer(pair: tuple[LocalPostgres, LocalPostgres]) -> Iterator[pg8000.native.Connection]:
    conn = pair[0].connect()
    conn.run("CREATE TABLE IF NOT EXISTS churn (n bigint)")
    yield conn
    conn.close()


@pytest.fixture
def paused_replay(pair: tuple[LocalPostgres, LocalPostgres]) -> Iterator[pg8000.native.Connection]:
    conn = pair[1].connect()
    conn.run("SELECT pg_wal_replay_pause()")
    try:
        yield conn
    finally:
        conn.run("SELECT pg_wal_replay_resume()")
        conn.close()


def status(conn: pg8000.native.Connection) -> dict[str, dict[str, Any]]:
    rows = conn.run("SELECT * FROM aurora_global_db_status()") or []
    return {str(r[0]): dict(zip(AURORA_COLUMNS, r, strict=True)) for r in rows}


def replicated(pair: tuple[LocalPostgres, LocalPostgres]) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    lsn = pair[0].connect().run("SELECT CAST(pg_current_wal_lsn() AS text)")[0][0]
    standby = pair[1].connect()
    eventually(lambda: standby.run(f"SELECT pg_last_wal_replay_lsn() >= CAST('{lsn}' AS pg_lsn)")[0][0],
               bool, "the standby catching up")  # fmt: skip
    standby.close()


# ------------------------------------------------------------------------------------------------ the emulation
def test_the_emulation_has_auroras_columns_and_a_row_per_region(pair: tuple[LocalPostgres, LocalPostgres]) -> None:
    conn = pair[0].connect()
    conn.run("SELECT * FROM aurora_global_db_status()")
    assert [c["name"] for c in conn.columns] == AURORA_COLUMNS
    rows = eventually(lambda: status(conn), lambda s: DR in s, "the standby's row")
    assert set(rows) == {PRIMARY, DR}
    me = rows[PRIMARY]
    assert (me["durability_lag_in_msec"], me["rpo_lag_in_msec"]) == (-1, -1)  # how Aurora marks the primary
    assert me["last_lag_calculation_time"].year == 1970
    assert me["highest_lsn_written"] > 0
    assert rows[DR]["last_lag_calculation_time"].year > 2000  # the standby's last reply


def test_rpo_lag_grows_while_replay_is_paused_and_recovers_after(
    pair: tuple[LocalPostgres, LocalPostgres], writer: pg8000.native.Connection, paused_replay: pg8000.native.Connection
) -> None:
    def lag_after_a_commit() -> int:
        writer.run("INSERT INTO churn VALUES (1)")
        value = status(writer)[DR]["rpo_lag_in_msec"]
        return -1 if value is None else int(value)  # -1: not measured (yet)

    first = eventually(lag_after_a_commit, lambda v: v > 1000, "rpo lag above 1 s")
    later = eventually(lag_after_a_commit, lambda v: v > first + 1000, "rpo lag growing")
    assert later > first  # real lag, measured twice
    own = status(paused_replay)[DR]  # the standby's own view: an upper bound, also growing
    assert own["rpo_lag_in_msec"] is not None
    assert own["rpo_lag_in_msec"] > 0
    paused_replay.run("SELECT pg_wal_replay_resume()")
    recovered = eventually(lambda: status(writer)[DR]["rpo_lag_in_msec"], lambda v: v is not None and v < 1000,
                           "the lag back under a second")  # fmt: skip
    assert recovered < later


# ------------------------------------------------------------------------------------------------ Aurora heartbeat
@pytest.fixture
def secret(pair: tuple[LocalPostgres, LocalPostgres], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=DR)
        value = json.dumps({"username": pair[0].user, "password": pair[0].password})
        yield sm.create_secret(Name="tandem/ledger", SecretString=value)["ARN"]


def connector(
    node: LocalPostgres, secret_arn: str, database: str = "ledger", host: str = "127.0.0.1"
) -> LedgerConnector:
    settings = LedgerDbSettings.from_env({
        "LEDGER_DB_HOST": host, "LEDGER_DB_PORT": str(node.port), "LEDGER_DB_NAME": database,
        "LEDGER_DB_SECRET_ARN": secret_arn, "LEDGER_DB_SSLMODE": "require", "LEDGER_DB_TIMEOUT": "2",
    })  # fmt: skip
    return LedgerConnector(settings, SecretCredentials(boto3.client("secretsmanager", region_name=DR), secret_arn))


def ledger_aurora(node: LocalPostgres, region: str, secret_arn: str, database: str = "ledger") -> LedgerAurora:
    return LedgerAurora(connector(node, secret_arn, database), region)


def test_the_writer_writes_the_heartbeat_and_the_secondary_reads_it_replicated(
    pair: tuple[LocalPostgres, LocalPostgres], secret: str
) -> None:
    on_writer = ledger_aurora(pair[0], PRIMARY, secret).observe()
    assert (on_writer.reachable, on_writer.writer, on_writer.heartbeat_written) == (True, True, True)
    assert on_writer.rpo_lag_seconds == 0.0
    row = pair[0].connect().run("SELECT region, beats FROM replication_heartbeat")
    assert row is not None
    assert row[0][0] == PRIMARY
    replicated(pair)
    on_secondary = ledger_aurora(pair[1], DR, secret).observe()
    assert (on_secondary.reachable, on_secondary.writer, on_secondary.heartbeat_written) == (True, False, False)
    assert on_secondary.heartbeat_age_seconds is not None
    assert on_secondary.heartbeat_age_seconds < 60
    assert on_secondary.rpo_lag_seconds is not None  # its own row of aurora_global_db_status()
    assert on_secondary.status_age_seconds is not None


def test_a_connection_that_died_since_the_last_run_is_not_a_dead_database(
    pair: tuple[LocalPostgres, LocalPostgres], secret: str
) -> None:
    """A Lambda environment keeps its connection between runs; the database may have dropped it meanwhile (a
    restart, an idle timeout). One observation on that dead connection must not read as a ledger that cannot
    commit - the active region's heartbeat would say so to the peer."""
    observer = ledger_aurora(pair[0], PRIMARY, secret)
    assert observer.observe().heartbeat_written
    admin = pair[0].connect()
    killed = admin.run(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " AND datname = 'ledger' AND pid <> pg_backend_pid()"
    )
    assert killed
    again = observer.observe()
    assert (again.reachable, again.writer, again.heartbeat_written) == (True, True, True)


def test_a_secondary_whose_writer_endpoint_is_inactive_is_observed_through_its_reader_endpoint(
    pair: tuple[LocalPostgres, LocalPostgres], secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A global secondary's cluster endpoint answers nothing until promotion (here: nothing listens on
    127.0.0.2); its reader endpoint does. Observing through the cluster endpoint left DR never ready."""
    replicated(pair)
    monkeypatch.setenv("AWS_REGION", DR)
    for key, value in {
        "LEDGER_DB_HOST": "127.0.0.2", "LEDGER_DB_PORT": str(pair[1].port), "LEDGER_DB_SECRET_ARN": secret,
        "LEDGER_DB_SSLMODE": "require", "LEDGER_DB_TIMEOUT": "2",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    through_writer_endpoint = ledger_aurora_from_env(AwsSettings.from_env()).observe()
    assert through_writer_endpoint.reachable is False  # the defect: DR unobservable, never ready
    monkeypatch.setenv("LEDGER_DB_READER_HOST", "127.0.0.1")
    observed = ledger_aurora_from_env(AwsSettings.from_env()).observe()
    assert (observed.reachable, observed.writer, observed.heartbeat_written) == (True, False, False)
    assert observed.heartbeat_age_seconds is not None  # the writer's row, replicated
    assert observed.rpo_lag_seconds is not None


def test_the_writer_region_writes_its_heartbeat_through_the_writer_endpoint(
    pair: tuple[LocalPostgres, LocalPostgres], secret: str
) -> None:
    """Read through the reader endpoint (here it reaches the writer instance: not in recovery), write the
    heartbeat through the cluster endpoint; a cluster endpoint that does not answer costs the heartbeat only."""
    beats = "SELECT coalesce(max(beats), 0) FROM replication_heartbeat WHERE region = :r"
    before = pair[0].connect().run(beats, r=PRIMARY)[0][0]
    observed = LedgerAurora(connector(pair[0], secret), PRIMARY, writer=connector(pair[0], secret)).observe()
    assert (observed.reachable, observed.writer, observed.heartbeat_written) == (True, True, True)
    assert pair[0].connect().run(beats, r=PRIMARY)[0][0] > before
    unanswered = connector(pair[0], secret, host="127.0.0.2")  # nothing listens there
    cut_off = LedgerAurora(connector(pair[0], secret), PRIMARY, writer=unanswered).observe()
    assert (cut_off.reachable, cut_off.writer, cut_off.heartbeat_written) == (True, True, False)
    assert str(cut_off.heartbeat_error).startswith("writer endpoint unreachable")


def test_without_the_function_or_the_table_the_lag_is_unknown_and_the_heartbeat_missing(
    pair: tuple[LocalPostgres, LocalPostgres], secret: str
) -> None:
    admin = pair[0].connect("postgres")
    admin.run("DROP DATABASE IF EXISTS bare")
    admin.run("CREATE DATABASE bare")
    admin.close()
    replicated(pair)
    obs = ledger_aurora(pair[1], DR, secret, database="bare").observe()
    assert (obs.reachable, obs.writer, obs.rpo_lag_seconds) == (True, False, None)
    assert obs.status_error == "aurora_global_db_status() is not available"
    assert obs.heartbeat_age_seconds is None
    assert obs.heartbeat_error is not None
    assert "replication_heartbeat table missing" in obs.heartbeat_error
    down = ledger_aurora(pair[1], DR, secret, database="no_such_db").observe()
    assert down.reachable is False
    assert down.error is not None


# ------------------------------------------------------------------------------------------------ the peer probe
class PeerIngress:
    """A stand-in for the peer's GET /health: answers ``status`` (or stalls ``delay`` seconds first)."""

    def __init__(self) -> None:
        self.status, self.delay, self.location = 200, 0.0, ""
        ingress = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(ingress.delay)
                self.send_response(ingress.status)
                if ingress.location:
                    self.send_header("Location", ingress.location)
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ingress() -> Iterator[PeerIngress]:
    peer = PeerIngress()
    yield peer
    peer.close()


def test_the_probe_is_healthy_only_on_200(ingress: PeerIngress) -> None:
    prober = HttpProber()
    assert prober.probe(ingress.url, 2.0).healthy is True
    ingress.status = 503
    assert (prober.probe(ingress.url, 2.0).healthy, prober.probe(ingress.url, 2.0).status) == (False, 503)
    ingress.status, ingress.location = 302, ingress.url
    assert prober.probe(ingress.url, 2.0).healthy is False  # a redirect is not an answer
    ingress.status, ingress.location, ingress.delay = 200, "", 1.0
    slow = prober.probe(ingress.url, 0.2)
    assert (slow.healthy, slow.status) == (False, None)
    assert slow.error is not None


def test_a_closed_port_is_an_unhealthy_peer() -> None:
    peer = PeerIngress()
    url = peer.url
    peer.close()
    result = HttpProber().probe(url, 1.0)
    assert (result.healthy, result.status) == (False, None)
    assert result.error is not None


# ------------------------------------------------------------------------------------------------ the whole handler
class Region:
    """The DR region: moto for its AWS side, the real standby as its Aurora cluster, a peer ingress."""

    def __init__(self, pair: tuple[LocalPostgres, LocalPostgres], secret_arn: str, ingress: PeerIngress) -> None:
        self.pair, self.ingress = pair, ingress
        self.ddb = boto3.client("dynamodb", region_name=DR)
        self.ddb.create_table(TableName="tandem-ledger", BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        self.s3 = boto3.client("s3", region_name=DR)
        self.s3.create_bucket(Bucket="tandem-archive-dr", CreateBucketConfiguration={"LocationConstraint": DR})
        queue = boto3.client("sqs", region_name=DR).create_queue(QueueName="tandem-transactions")["QueueUrl"]
        self.env = {
            "AWS_REGION": DR, "AWS_DEFAULT_REGION": DR, "TANDEM_REGION_ROLE": "dr", "PEER_REGION": PRIMARY,
            "LEDGER_TABLE_NAME": "tandem-ledger", "ARCHIVE_BUCKET_NAME": "tandem-archive-dr",
            "PEER_ARCHIVE_BUCKET_NAME": "tandem-archive-primary", "TRANSACTION_QUEUE_URL": queue,
            "LEDGER_DB_HOST": "127.0.0.1", "LEDGER_DB_PORT": str(pair[1].port), "LEDGER_DB_NAME": "ledger",
            "LEDGER_DB_SECRET_ARN": secret_arn, "LEDGER_DB_SSLMODE": "require",
            "PEER_HEALTH_URL": ingress.url, "PROBE_INTERVAL_SECONDS": "0",
            "POWERTOOLS_SERVICE_NAME": "replication_monitor", "AWS_LAMBDA_FUNCTION_NAME": "tandem-replication-monitor",
        }  # fmt: skip
        self.calls: list[str] = []

    def peer_heartbeats(
        self, seconds_ago: float = 1.0, ddb_lag: float | None = 0.4, s3_lag: float | None = 0.2
    ) -> None:
        """What the primary's monitor wrote, as table and bucket replication deliver it here."""
        written = time.time() - seconds_ago
        outbound = {"dynamodb": {"value": ddb_lag, "as_of": written - 60}, "s3": {"value": s3_lag, "as_of": written},
                    "s3_pending_operations": 0.0}  # fmt: skip
        item = {"region": PRIMARY, "written_at": written, "outbound": outbound}
        self.ddb.put_item(TableName="tandem-ledger", Item={**heartbeat_key(PRIMARY), **to_attributes(item)})
        self.s3.put_object(Bucket="tandem-archive-dr", Key=f"heartbeat/{PRIMARY}", Body=b"{}",
                           Metadata={"written-at": f"{written:.3f}"})  # fmt: skip

    def aurora_heartbeat(self, secret_arn: str) -> None:
        """The primary region's monitor beats on the writer; wait until the standby has it."""
        ledger_aurora(self.pair[0], PRIMARY, secret_arn).observe()
        replicated(self.pair)

    def invoke(self, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
        for key, value in {**self.env, **env}.items():
            monkeypatch.setenv(key, value)
        app.build_monitor.cache_clear()
        clients.client.cache_clear()
        clients.session.cache_clear()
        for service in ("cloudwatch", "sqs", "dynamodb", "s3", "secretsmanager"):  # the clients the monitor gets
            clients.client(service, DR, None).meta.events.register(
                "before-call", lambda model, **_: self.calls.append(model.name)
            )
        try:
            result: dict[str, Any] = app.lambda_handler(
                load_event("monitor_scheduled.json"), LambdaContext("tandem-replication-monitor", DR, 80.0)
            )
        finally:
            app.build_monitor.cache_clear()
        return result


@pytest.fixture
def region(pair: tuple[LocalPostgres, LocalPostgres], secret: str, ingress: PeerIngress) -> Region:
    return Region(pair, secret, ingress)  # moto stays active for the whole test (the secret fixture's mock_aws)


def test_everything_fresh_is_ready_within_15_calls_and_recorded(
    region: Region, secret: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    region.aurora_heartbeat(secret)
    region.peer_heartbeats()
    report = region.invoke(monkeypatch)
    assert (report["verdict"], report["reasons"]) == ("ready", [])
    assert report["region"] == DR
    assert report["aurora_writer"] is False
    assert report["stores"]["aurora"]["source"] == "aurora_global_db_status"
    assert report["stores"]["aurora"]["heartbeat"] == "fresh"
    assert report["lag_seconds"]["dynamodb"] == 0.4
    assert report["peer"]["healthy"] is True
    assert report["peer"]["probes_healthy"] == 6
    assert len(region.calls) <= 15  # a default run of 6 rounds; direct database mode, secret read included
    record = region.ddb.get_item(TableName="tandem-ledger", Key=readiness_key(DR))["Item"]
    assert record["verdict"]["S"] == "ready"
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [e["Ready"] for e in emf if "Ready" in e] == [[1.0]]
    assert sum(1 for e in emf if "PeerHealthy" in e) == 6


def test_paused_aurora_replay_makes_the_region_not_ready_naming_aurora(
    region: Region, secret: str, writer: pg8000.native.Connection, paused_replay: pg8000.native.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    region.peer_heartbeats()

    def run() -> dict[str, Any]:
        writer.run("INSERT INTO churn VALUES (1)")
        return region.invoke(monkeypatch, PROBE_COUNT="1", RPO_BUDGET_SECONDS="1", LAG_WARNING_SECONDS="0.5")

    report = eventually(run, lambda r: "aurora_lag_above_budget" in r["reasons"], "aurora above budget")
    assert report["verdict"] == "not_ready"
    assert report["lag_seconds"]["aurora"] > 1
    assert [r for r in report["reasons"] if not r.startswith("aurora_")] == []


@pytest.fixture
def writer_unreachable(pair: tuple[LocalPostgres, LocalPostgres]) -> Iterator[Callable[[], None]]:
    """Cuts the standby off from the writer (its WAL receiver stops, as when the primary region is lost), on
    call; the link is restored afterwards (the server pair is shared by the module)."""
    conn = pair[1].connect()
    conninfo = str(conn.run("SHOW primary_conninfo")[0][0])

    def cut() -> None:
        conn.run("ALTER SYSTEM SET primary_conninfo = ''")
        conn.run("SELECT pg_reload_conf()")
        for (pid,) in conn.run("SELECT pid FROM pg_stat_wal_receiver") or []:
            os.kill(int(pid), signal.SIGTERM)  # an auxiliary process: pg_terminate_backend() cannot stop it

    try:
        yield cut
    finally:
        conn.run(f"ALTER SYSTEM SET primary_conninfo = '{conninfo.replace(chr(39), chr(39) * 2)}'")
        conn.run("SELECT pg_reload_conf()")
        conn.run("SELECT pg_wal_replay_resume()")  # a paused startup process would never restart the receiver
        eventually(lambda: conn.run("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")[0][0],
                   bool, "the WAL receiver streaming again")  # fmt: skip
        conn.close()


def test_aurora_behind_then_the_writer_lost_stays_not_ready_on_the_last_lag_measured(
    region: Region, secret: str, writer: pg8000.native.Connection, paused_replay: pg8000.native.Connection,
    writer_unreachable: Callable[[], None], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A stall far shorter than the heartbeat's staleness threshold, then the primary region is lost: the
    status row can no longer say how far behind we are, yet the verdict stays not_ready - a failover would
    lose more than the budget."""
    region.peer_heartbeats()
    budget = {"PROBE_COUNT": "1", "RPO_BUDGET_SECONDS": "1", "LAG_WARNING_SECONDS": "0.5"}

    def run() -> dict[str, Any]:
        writer.run("INSERT INTO churn VALUES (1)")
        return region.invoke(monkeypatch, **budget)

    behind = eventually(run, lambda r: "aurora_lag_above_budget" in r["reasons"], "aurora above budget")
    measured = behind["stores"]["aurora"]["lag_seconds"]
    writer_unreachable()
    region.ingress.status = 503
    lost = eventually(lambda: region.invoke(monkeypatch, **budget),
                      lambda r: r["stores"]["aurora"]["lag_seconds"] is None, "no lag in the status row")  # fmt: skip
    assert lost["verdict"] == "not_ready"
    assert "aurora_lag_above_budget_before_peer_lost" in lost["reasons"]
    assert lost["stores"]["aurora"]["last_measured_lag_seconds"] >= measured
    assert lost["stores"]["aurora"]["heartbeat"] == "fresh"  # nowhere near the staleness threshold


def test_a_stalled_table_replication_is_not_ready_and_stays_so_when_the_peer_goes_silent(
    region: Region, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    region.aurora_heartbeat(secret)
    region.peer_heartbeats(seconds_ago=300.0)
    stalled = region.invoke(monkeypatch, PROBE_COUNT="1")
    assert stalled["verdict"] == "not_ready"
    assert {"dynamodb_heartbeat_stale", "s3_heartbeat_stale"} <= set(stalled["reasons"])
    assert stalled["stores"]["dynamodb"]["last_known_lag_seconds"] == 0.4
    # The peer goes silent too, but its Aurora heartbeat arrived long after the table's stopped: the stall came
    # first, so a failover would lose at least that gap (a region loss stops every heartbeat at once: degraded).
    region.ingress.status = 503
    gone = region.invoke(monkeypatch, PROBE_COUNT="1")
    assert gone["verdict"] == "not_ready"
    assert gone["peer"]["healthy"] is False
    assert {"dynamodb_stalled_before_peer_lost", "dynamodb_lag_unknown", "s3_stalled_before_peer_lost"} <= set(
        gone["reasons"]
    )


def test_an_unknown_store_lag_degrades_and_names_the_store(
    region: Region, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    region.aurora_heartbeat(secret)
    region.peer_heartbeats(s3_lag=None)
    report = region.invoke(monkeypatch, PROBE_COUNT="1")
    assert (report["verdict"], report["reasons"]) == ("degraded", ["s3_lag_unknown"])
    assert report["lag_seconds"]["s3"] is None


def test_an_unreachable_database_is_not_ready(region: Region, monkeypatch: pytest.MonkeyPatch) -> None:
    region.peer_heartbeats()
    report = region.invoke(monkeypatch, PROBE_COUNT="1", LEDGER_DB_PORT="1")
    assert report["verdict"] == "not_ready"
    assert report["reasons"][0] == "own_database_unreachable"


def test_the_emulation_file_is_the_one_the_twin_ships() -> None:
    assert Path(EMULATION).is_file()
    text = EMULATION.read_text(encoding="utf-8")
    for column in AURORA_COLUMNS:
        assert f"OUT {column} " in text

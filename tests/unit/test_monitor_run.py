"""One monitor run in moto (in-process): what it measures, writes, publishes, and how many AWS calls it makes."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from replication_monitor.monitor import FenceKeeper, ProbeResult, ReplicationMonitor
from tandem.local import ledger_table_keys
from tandem_core.aurora_observer import AuroraObservation, InvokedAurora
from tandem_core.control import ControlStore, NewExecution
from tandem_core.fencing import ProcessingSwitch
from tandem_core.forwarding import REDRIVES, DlqRedrive, QueueForwarder
from tandem_core.heartbeat import BucketHeartbeats, ControlItems, LedgerVerdict, from_attributes, heartbeat_key
from tandem_core.readiness import readiness_key
from tandem_core.replication import OutboundLag, Store
from tandem_core.settings import MonitorSettings
from tests.conftest import FakeClock, transfer

REGION, PEER = "us-west-2", "us-east-1"
TABLE, BUCKET, PEER_BUCKET = "tandem-ledger", "tandem-archive-dr", "tandem-archive-primary"
SECONDARY = AuroraObservation(
    True, writer=False, rpo_lag_seconds=0.3, status_age_seconds=1.0, heartbeat_age_seconds=20.0
)


@dataclass
class FakeProber:
    """Answers from a script (healthy unless told otherwise) and remembers what it was asked."""

    script: list[bool] = field(default_factory=list)
    asked: list[tuple[str, float]] = field(default_factory=list)
    meanwhile: Callable[[int], None] | None = None  # what happens in the world before probe n (0-based)

    def probe(self, url: str, timeout: float) -> ProbeResult:
        if self.meanwhile is not None:
            self.meanwhile(len(self.asked))
        self.asked.append((url, timeout))
        healthy = self.script.pop(0) if self.script else True
        return ProbeResult(healthy, 200 if healthy else None, None if healthy else "ConnectionRefusedError")


@dataclass
class ListSink:
    rounds: list[tuple[float, bool | None, float | None]] = field(default_factory=list)
    runs: list[tuple[float, dict[Store, float | None], bool]] = field(default_factory=list)
    armed: list[bool] = field(default_factory=list)
    peer_ledger: list[float | None] = field(default_factory=list)  # PeerLedgerFailingSeconds per round

    def probe_round(
        self, at: float, peer_healthy: bool | None, peer_heartbeat_age: float | None, failing_seconds: float | None
    ) -> None:
        self.rounds.append((at, peer_healthy, peer_heartbeat_age))
        self.peer_ledger.append(failing_seconds)

    def run(self, at: float, lags: Mapping[Store, float | None], ready: bool, armed: bool) -> None:
        self.runs.append((at, dict(lags), ready))
        self.armed.append(armed)


class FakeLambda:
    """The observer function's answer, as Lambda's Invoke returns it."""

    def __init__(self, observation: AuroraObservation, calls: list[str]) -> None:
        self.observation = observation
        self.calls = calls

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(f"Invoke {kwargs['FunctionName']}")
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.observation.as_dict()).encode())}


@dataclass
class World:
    clients: dict[str, Any]
    queue_url: str
    clock: FakeClock
    calls: list[str]

    def monitor(
        self,
        aurora: AuroraObservation = SECONDARY,
        prober: FakeProber | None = None,
        fence: FenceKeeper | None = None,
        events: Any = None,
        **env: str,
    ) -> tuple[ReplicationMonitor, FakeProber]:
        settings = MonitorSettings.from_env({
            "TANDEM_REGION_ROLE": "dr", "PEER_REGION": PEER, "LEDGER_TABLE_NAME": TABLE, "ARCHIVE_BUCKET_NAME": BUCKET,
            "PEER_ARCHIVE_BUCKET_NAME": PEER_BUCKET, "TRANSACTION_QUEUE_URL": self.queue_url,
            "AURORA_OBSERVER_FUNCTION": "observer", "LEDGER_DB_CLUSTER_ID": "tandem-ledger-dr",
            "PEER_HEALTH_URL": "https://peer.example/health", **env,
        })  # fmt: skip
        prober = prober or FakeProber()
        monitor = ReplicationMonitor(
            settings, REGION,
            cloudwatch=self.clients["cloudwatch"], sqs=self.clients["sqs"],
            control=ControlItems(self.clients["dynamodb"], TABLE, REGION, PEER),
            bucket=BucketHeartbeats(self.clients["s3"], BUCKET, REGION, PEER),
            aurora=InvokedAurora(FakeLambda(aurora, self.calls), "observer"),
            prober=prober, fence=fence, events=events, clock=self.clock.now, sleep=self.sleep,
        )  # fmt: skip
        return monitor, prober

    def sleep(self, seconds: float) -> None:
        self.clock.t += seconds

    def peer_writes(
        self,
        seconds_ago: float,
        ddb_lag_ms: float | None = 800.0,
        s3_lag: float | None = 1.5,
        every_seconds: float | None = None,
        s3_seconds_ago: float | None = None,
        s3_every_seconds: float | None = None,
        ledger: LedgerVerdict | None = None,
    ) -> None:
        """The peer's heartbeats, written by the peer's own code, as replication delivers them into this region's
        table and bucket (``s3_seconds_ago``: the object's age when it differs from the item's)."""
        written = self.clock.t - seconds_ago
        outbound = OutboundLag.from_dict({
            "dynamodb": {"value": None if ddb_lag_ms is None else ddb_lag_ms / 1000, "as_of": written - 60},
            "s3": {"value": s3_lag, "as_of": written - 60},
            "s3_pending_operations": 0.0,
        })  # fmt: skip
        ControlItems(self.clients["dynamodb"], TABLE, PEER, REGION).write_heartbeat(
            written, outbound, every_seconds=every_seconds, ledger=ledger
        )
        s3_written = written if s3_seconds_ago is None else self.clock.t - s3_seconds_ago
        BucketHeartbeats(self.clients["s3"], BUCKET, PEER, REGION).write(s3_written, s3_every_seconds)

    def item(self, key: dict[str, Any]) -> dict[str, Any] | None:
        raw = self.clients["dynamodb"].get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item")
        return None if raw is None else from_attributes(raw)


@pytest.fixture
def world(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AWS_REGION", REGION)
    with mock_aws():
        clients = {s: boto3.client(s, region_name=REGION) for s in ("cloudwatch", "sqs", "dynamodb", "s3")}
        clients["dynamodb"].create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
        clients["s3"].create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        url = clients["sqs"].create_queue(QueueName="tandem-transactions")["QueueUrl"]
        calls: list[str] = []
        for c in clients.values():
            c.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
        yield World(clients, url, FakeClock(float(int(time.time()))), calls)


def test_steady_state_is_ready_and_every_signal_is_reported(world: World) -> None:
    world.peer_writes(seconds_ago=4.0)
    monitor, prober = world.monitor()
    sink = ListSink()
    report = monitor.run(sink)
    assert (report["verdict"], report["reasons"]) == ("ready", [])
    assert report["lag_seconds"] == {"aurora": 0.3, "dynamodb": 0.8, "s3": 1.5}
    assert report["stores"]["dynamodb"]["source"] == "peer cloudwatch"
    assert report["stores"]["s3"]["heartbeat"] == "fresh"
    assert report["dependencies"] == dict.fromkeys(("database", "table", "bucket", "queue", "metrics"), "ok")
    assert report["peer"]["healthy"] is True
    assert report["peer"]["probes_healthy"] == 6
    assert report["peer"]["probes"][0]["heartbeat_age_seconds"] == pytest.approx(4.0)
    assert prober.asked == [("https://peer.example/health", 2.0)] * 6
    ((at, lags, ready),) = sink.runs
    assert at == pytest.approx(world.clock.t - 50)  # measured at the start of the run
    assert (lags, ready) == ({Store.AURORA: 0.3, Store.DYNAMODB: 0.8, Store.S3: 1.5}, True)


def test_a_default_run_probes_every_10_s_and_stays_within_15_aws_calls(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    world.calls.clear()
    start = world.clock.t
    monitor, _ = world.monitor()
    sink = ListSink()
    monitor.run(sink)
    assert [round(at - start, 3) for at, _, _ in sink.rounds] == [0, 10, 20, 30, 40, 50]
    assert len(world.calls) == 14
    assert sorted(world.calls) == sorted(
        ["GetMetricData", "Invoke observer", "GetQueueAttributes", "PutObject", "HeadObject"]
        + ["GetItem"] * 4
        # the first and the last round: the peer's heartbeat, our own last readiness record, the control record
        + ["BatchGetItem"] * 2
        + ["PutItem"] * 2
        + ["BatchWriteItem"]
    )


def test_a_single_pass_makes_seven_calls_and_still_writes_heartbeat_and_readiness(world: World) -> None:
    monitor, _ = world.monitor(PROBE_COUNT="1")
    sink = ListSink()
    report = monitor.run(sink)
    assert len(world.calls) == 7
    assert len(sink.rounds) == 1
    assert world.item(heartbeat_key(REGION)) is not None
    record = world.item(readiness_key(REGION))
    assert record is not None
    assert (record["verdict"], record["reasons"]) == (report["verdict"], report["reasons"])


def test_own_heartbeat_every_second_round_the_last_with_the_readiness_record(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    start = world.clock.t
    monitor, _ = world.monitor()
    monitor.run(ListSink())
    hb = world.item(heartbeat_key(REGION))
    assert hb is not None
    assert hb["written_at"] == pytest.approx(start + 50)  # the last round's write
    assert hb["outbound"]["dynamodb"] == {"value": None, "as_of": None}  # no CloudWatch datapoint here: unknown
    record = world.item(readiness_key(REGION))
    assert record is not None
    assert record["region"] == REGION
    assert record["role"] == "dr"
    assert record["peer"]["region"] == PEER
    assert record["measured_at"] == datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    object_head = world.clients["s3"].head_object(Bucket=BUCKET, Key=f"heartbeat/{REGION}")
    assert float(object_head["Metadata"]["written-at"]) == pytest.approx(start)


def test_the_run_writes_nothing_but_its_own_items_and_object(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    before_items = world.clients["dynamodb"].scan(TableName=TABLE)["Items"]
    monitor, _ = world.monitor()
    monitor.run(ListSink())
    after = world.clients["dynamodb"].scan(TableName=TABLE)["Items"]
    new_keys = {i["pk"]["S"] for i in after} - {i["pk"]["S"] for i in before_items}
    assert new_keys == {f"HEARTBEAT#{REGION}", f"READINESS#{REGION}"}
    keys = {o["Key"] for o in world.clients["s3"].list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {f"heartbeat/{REGION}", f"heartbeat/{PEER}"}
    assert (
        world.clients["sqs"].get_queue_attributes(
            QueueUrl=world.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        == "0"
    )


def test_the_outbound_lag_this_region_measures_travels_in_its_heartbeat(world: World) -> None:
    world.clients["cloudwatch"].put_metric_data(
        Namespace="AWS/DynamoDB",
        MetricData=[{
            "MetricName": "ReplicationLatency", "Value": 640.0, "Unit": "Milliseconds",
            "Dimensions": [{"Name": "TableName", "Value": TABLE}, {"Name": "ReceivingRegion", "Value": PEER}],
            "Timestamp": datetime.fromtimestamp(world.clock.t - 30, UTC),
        }],
    )  # fmt: skip
    monitor, _ = world.monitor(PROBE_COUNT="1")
    monitor.run(ListSink())
    hb = world.item(heartbeat_key(REGION))
    assert hb is not None
    assert hb["outbound"]["dynamodb"]["value"] == pytest.approx(0.64)


def test_nothing_from_the_peer_yet_is_degraded_and_unknown_not_zero(world: World) -> None:
    monitor, _ = world.monitor()
    sink = ListSink()
    report = monitor.run(sink)
    assert report["verdict"] == "degraded"
    assert report["reasons"] == [
        "dynamodb_lag_unknown", "dynamodb_heartbeat_missing", "s3_lag_unknown", "s3_heartbeat_missing",
    ]  # fmt: skip
    assert report["lag_seconds"] == {"aurora": 0.3, "dynamodb": None, "s3": None}
    assert sink.runs[0][1] == {Store.AURORA: 0.3, Store.DYNAMODB: None, Store.S3: None}
    assert all(age is None for _, _, age in sink.rounds)


def test_a_stalled_table_replication_with_the_peer_answering_is_not_ready(world: World) -> None:
    world.peer_writes(seconds_ago=400.0)
    monitor, _ = world.monitor()
    report = monitor.run(ListSink())
    assert report["verdict"] == "not_ready"
    assert "dynamodb_heartbeat_stale" in report["reasons"]
    assert report["stores"]["dynamodb"]["last_known_lag_seconds"] == 0.8
    assert report["lag_seconds"]["dynamodb"] is None


def test_our_heartbeat_promises_the_next_within_two_probe_intervals_a_single_pass_promises_nothing(
    world: World,
) -> None:
    monitor, _ = world.monitor()
    monitor.run(ListSink())
    assert (world.item(heartbeat_key(REGION)) or {})["every_seconds"] == 20.0
    monitor, _ = world.monitor(PROBE_COUNT="1")
    monitor.run(ListSink())
    assert "every_seconds" not in (world.item(heartbeat_key(REGION)) or {})


def test_two_missed_table_heartbeats_while_the_peer_answers_raise_the_lag_to_their_age(world: World) -> None:
    """DynamoDB's ReplicationLatency simply stops in a stall; the carried 0.8 s must not hide it."""
    world.peer_writes(seconds_ago=45.0, every_seconds=20.0)
    monitor, _ = world.monitor(PROBE_COUNT="1")  # one round: judged at the age written above
    sink = ListSink()
    report = monitor.run(sink)
    assert report["verdict"] == "not_ready"
    assert report["reasons"] == ["dynamodb_lag_above_budget"]
    assert report["lag_seconds"]["dynamodb"] == pytest.approx(25.0)  # 45 s old, one due every 20 s
    assert report["stores"]["dynamodb"]["source"].startswith("heartbeat overdue")
    assert sink.runs[0][1][Store.DYNAMODB] == pytest.approx(25.0)  # the published lag rises with it


def test_a_heartbeat_within_two_promised_intervals_keeps_the_measured_lag(world: World) -> None:
    world.peer_writes(seconds_ago=39.0, every_seconds=20.0)
    monitor, _ = world.monitor(PROBE_COUNT="1")
    report = monitor.run(ListSink())
    assert report["verdict"] == "ready"
    assert report["lag_seconds"]["dynamodb"] == 0.8


def test_an_overdue_heartbeat_of_a_silent_peer_is_not_taken_for_replication_delay(world: World) -> None:
    """A region loss stops the peer's writes: that must not look like lag and block the failover meant for it."""
    world.peer_writes(seconds_ago=45.0, every_seconds=20.0)
    monitor, _ = world.monitor(prober=FakeProber([False]), PROBE_COUNT="1")
    report = monitor.run(ListSink())
    assert report["lag_seconds"]["dynamodb"] == 0.8
    assert "dynamodb_lag_above_budget" not in report["reasons"]
    assert report["peer"]["answered"] is False


def test_our_bucket_heartbeat_promises_the_next_within_one_run_a_single_pass_promises_nothing(world: World) -> None:
    for probe_count, promise in (("6", "60.000"), ("1", None)):
        monitor, _ = world.monitor(PROBE_COUNT=probe_count)
        monitor.run(ListSink())
        head = world.clients["s3"].head_object(Bucket=BUCKET, Key=f"heartbeat/{REGION}")
        assert head["Metadata"].get("every-seconds") == promise


def test_two_missed_bucket_heartbeats_while_the_peer_answers_raise_the_s3_lag(world: World) -> None:
    world.peer_writes(seconds_ago=1.0, every_seconds=20.0, s3_seconds_ago=130.0, s3_every_seconds=60.0)
    monitor, _ = world.monitor(PROBE_COUNT="1")
    report = monitor.run(ListSink())
    assert report["reasons"] == ["s3_lag_above_budget", "s3_heartbeat_stale"]
    assert report["lag_seconds"] == {"aurora": 0.3, "dynamodb": 0.8, "s3": pytest.approx(70.0)}


def test_the_verdict_is_judged_on_the_heartbeat_of_the_last_round(world: World) -> None:
    """A heartbeat that arrives during the run counts for this run's verdict, not the next one's."""
    arrives = FakeProber(meanwhile=lambda n: world.peer_writes(seconds_ago=0.5) if n == 3 else None)
    monitor, _ = world.monitor(prober=arrives)
    report = monitor.run(ListSink())
    assert report["lag_seconds"]["dynamodb"] == 0.8
    assert not [r for r in report["reasons"] if r.startswith("dynamodb")], report["reasons"]
    assert report["peer"]["heartbeat_age_seconds"] == pytest.approx(20.5)  # written in round 3, judged in round 5


def test_a_silent_peer_with_stale_heartbeats_is_degraded_not_blocked(world: World) -> None:
    world.peer_writes(seconds_ago=400.0)  # a region loss: every heartbeat stopped at once, Aurora's too
    monitor, _ = world.monitor(aurora=replace(SECONDARY, heartbeat_age_seconds=430.0), prober=FakeProber([False] * 6))
    sink = ListSink()
    report = monitor.run(sink)
    assert report["verdict"] == "degraded"
    assert {"aurora_heartbeat_stale", "dynamodb_heartbeat_stale", "s3_heartbeat_stale"} <= set(report["reasons"])
    assert report["peer"]["healthy"] is False
    assert report["peer"]["probes_failed"] == 6
    assert [h for _, h, _ in sink.rounds] == [False] * 6
    assert [round(a or 0) for _, _, a in sink.rounds] == [400, 410, 420, 430, 440, 450]  # the age keeps rising


def test_a_stall_seen_before_the_peer_went_silent_keeps_the_region_not_ready(world: World) -> None:
    """DynamoDB and S3 delivered nothing for minutes while the peer's Aurora heartbeats kept arriving: the peer
    was alive and writing, so those stores had stalled - a failover now would lose at least that gap."""
    world.peer_writes(seconds_ago=400.0)
    monitor, _ = world.monitor(prober=FakeProber([False] * 6))  # Aurora's heartbeat is 20 s old
    report = monitor.run(ListSink())
    assert report["verdict"] == "not_ready"
    assert {"dynamodb_stalled_before_peer_lost", "s3_stalled_before_peer_lost"} <= set(report["reasons"])
    assert "aurora_heartbeat_stale" not in report["reasons"]


def test_a_short_stall_is_not_forgotten_when_the_peer_falls_silent_and_the_lag_cannot_be_measured(
    world: World,
) -> None:
    """Aurora 12 s behind (heartbeats all fresh: far below the staleness threshold), then the primary is lost:
    the status row is gone, yet the verdict stays not_ready on the lag the last run measured - it travels in
    our own readiness record from run to run - until a measurement says otherwise."""
    world.peer_writes(seconds_ago=1.0)
    behind = replace(SECONDARY, rpo_lag_seconds=12.0)
    first = world.monitor(aurora=behind, PROBE_COUNT="1")[0].run(ListSink())
    assert (first["verdict"], first["reasons"]) == ("not_ready", ["aurora_lag_above_budget"])
    world.clock.t += 60
    lost = AuroraObservation(True, writer=False, status_error="rpo_lag_in_msec is null", heartbeat_age_seconds=61.0)
    silent = world.monitor(aurora=lost, prober=FakeProber([False] * 3), PROBE_COUNT="1")[0]
    for _ in range(3):  # every later run keeps it: nothing measured since says Aurora caught up
        report = silent.run(ListSink())
        assert report["verdict"] == "not_ready"
        assert "aurora_lag_above_budget_before_peer_lost" in report["reasons"]
        assert report["stores"]["aurora"]["last_measured_lag_seconds"] == 12.0
        world.clock.t += 60
    stored = world.item(readiness_key(REGION))
    assert stored is not None
    assert stored["stores"]["aurora"]["last_measured_lag_seconds"] == 12.0
    caught_up = world.monitor(aurora=SECONDARY, prober=FakeProber([False]), PROBE_COUNT="1")[0].run(ListSink())
    assert caught_up["stores"]["aurora"]["last_measured_lag_seconds"] == 0.3  # a new measurement replaces it
    assert not [r for r in caught_up["reasons"] if r.startswith("aurora")], caught_up["reasons"]


def test_a_region_loss_with_replication_within_budget_stays_degraded(world: World) -> None:
    """The same silence after a healthy last measurement: the failover meant for a region loss is not blocked."""
    world.peer_writes(seconds_ago=1.0)
    assert world.monitor(PROBE_COUNT="1")[0].run(ListSink())["verdict"] == "ready"
    world.clock.t += 60
    lost = AuroraObservation(True, writer=False, status_error="rpo_lag_in_msec is null", heartbeat_age_seconds=61.0)
    report = world.monitor(aurora=lost, prober=FakeProber([False]), PROBE_COUNT="1")[0].run(ListSink())
    assert report["verdict"] == "degraded"
    assert "aurora_lag_unknown" in report["reasons"]
    assert report["stores"]["aurora"]["last_measured_lag_seconds"] == 0.3


def test_an_unreachable_own_queue_makes_the_region_not_ready(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    world.clients["sqs"].delete_queue(QueueUrl=world.queue_url)
    monitor, _ = world.monitor(PROBE_COUNT="1")
    report = monitor.run(ListSink())
    assert report["verdict"] == "not_ready"
    assert report["reasons"] == ["own_queue_unreachable"]
    assert report["dependencies"]["queue"] != "ok"


def test_a_missing_own_table_is_not_ready_and_nothing_crashes(world: World) -> None:
    world.clients["dynamodb"].delete_table(TableName=TABLE)
    monitor, _ = world.monitor(PROBE_COUNT="2", PROBE_INTERVAL_SECONDS="0")
    report = monitor.run(ListSink())
    assert report["verdict"] == "not_ready"
    assert report["reasons"][0] == "own_table_unreachable"
    assert report["dependencies"]["table"] == "ResourceNotFoundException"


def test_an_unreachable_database_or_observer_is_not_ready(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    monitor, _ = world.monitor(aurora=AuroraObservation(False, error="OSError: timed out"), PROBE_COUNT="1")
    report = monitor.run(ListSink())
    assert report["verdict"] == "not_ready"
    assert report["reasons"] == ["own_database_unreachable", "aurora_lag_unknown"]
    assert report["dependencies"]["database"] == "OSError: timed out"
    assert report["aurora_writer"] is None


def test_the_writer_region_reports_zero_aurora_lag(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    monitor, _ = world.monitor(aurora=AuroraObservation(True, writer=True, rpo_lag_seconds=0.0,
                                                        heartbeat_written=True), PROBE_COUNT="1")  # fmt: skip
    report = monitor.run(ListSink())
    assert report["verdict"] == "ready"
    assert report["stores"]["aurora"]["source"] == "writer"
    assert report["aurora_writer"] is True


def test_no_peer_url_means_peer_health_unknown_and_no_probe(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    monitor, prober = world.monitor(PEER_HEALTH_URL="", PROBE_COUNT="1")
    sink = ListSink()
    report = monitor.run(sink)
    assert prober.asked == []
    assert report["peer"]["healthy"] is None
    assert report["peer"]["probed"] is False
    assert sink.rounds[0][1] is None


def test_too_little_time_left_ends_the_run_early_with_its_record(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    monitor, _ = world.monitor()
    sink = ListSink()
    report = monitor.run(sink, remaining_ms=lambda: 12_000)  # not enough for another 10 s round
    assert len(sink.rounds) == 1
    assert report["verdict"] == "ready"
    assert world.item(readiness_key(REGION)) is not None


def test_a_malformed_peer_heartbeat_counts_as_missing(world: World) -> None:
    world.clients["dynamodb"].put_item(
        TableName=TABLE, Item={**heartbeat_key(PEER), "written_at": {"S": "yesterday"}, "outbound": {"N": "1"}}
    )
    monitor, _ = world.monitor(PROBE_COUNT="1")
    report = monitor.run(ListSink())
    assert "dynamodb_heartbeat_missing" in report["reasons"]
    assert report["dependencies"]["table"] == "ok"


# ---------------------------------------------------------------------------------------------- fencing
def _fenced_region(world: World, *, enabled: bool) -> tuple[FenceKeeper, Any, str]:
    """This region's processor (mapping ``enabled``) and recorded state, the peer's queue, the keeper."""
    lam, ssm = boto3.client("lambda", region_name=REGION), boto3.client("ssm", region_name=REGION)
    role = boto3.client("iam", region_name=REGION).create_role(RoleName="fn", AssumeRolePolicyDocument="{}")
    lam.create_function(FunctionName="processor", Runtime="python3.12", Role=role["Role"]["Arn"], Handler="x.y",
                        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})  # fmt: skip
    arn = world.clients["sqs"].get_queue_attributes(QueueUrl=world.queue_url, AttributeNames=["QueueArn"])
    lam.create_event_source_mapping(
        EventSourceArn=arn["Attributes"]["QueueArn"], FunctionName="processor", Enabled=enabled
    )
    ssm.put_parameter(Name="/tandem/dr/processing-enabled", Value=str(enabled).lower(), Type="String")
    peer_sqs = boto3.client("sqs", region_name=PEER)
    peer_queue = peer_sqs.create_queue(QueueName="tandem-app-primary-transactions")["QueueUrl"]
    switch = ProcessingSwitch(REGION, lam, ssm, "processor", "/tandem/dr/processing-enabled")
    forwarder = QueueForwarder(world.clients["sqs"], world.queue_url, peer_sqs, peer_queue)
    return FenceKeeper(switch, forwarder), peer_sqs, peer_queue


def test_a_region_that_is_not_active_redrives_what_its_dlq_holds_for_infrastructure_reasons(world: World) -> None:
    """Finding 6 of the backlog issue: fenced batches and failed forwards count toward maxReceiveCount, so a
    message could end in a non-active region's DLQ as if it were poison, and wait there for an operator."""
    world.peer_writes(seconds_ago=1.0)
    keeper, peer_sqs, peer_queue = _fenced_region(world, enabled=False)
    sqs = world.clients["sqs"]
    dlq = sqs.create_queue(QueueName="tandem-app-dr-transactions-dlq")["QueueUrl"]
    fenced = transfer("acc-f1", "acc-f2")
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(fenced))  # dead-lettered by five fenced receives
    sqs.send_message(QueueUrl=dlq, MessageBody="not a transaction")  # poison stays poison
    keeper = replace(keeper, dead_letters=DlqRedrive(sqs, dlq, peer_sqs, peer_queue))
    monitor, _ = world.monitor(fence=keeper)
    report = monitor.run(ListSink())["fence"]
    assert report["dead_letters"]["redriven"] == 1
    assert [m["reason"].split(":")[0] for m in report["dead_letters"]["left"]] == ["invalid"]
    (moved,) = peer_sqs.receive_message(QueueUrl=peer_queue, MessageAttributeNames=["All"])["Messages"]
    assert json.loads(moved["Body"]) == fenced
    assert moved["MessageAttributes"][REDRIVES]["StringValue"] == "1"
    left = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in left] == ["not a transaction"]


def _state(world: World) -> tuple[str, str]:
    lam, ssm = boto3.client("lambda", region_name=REGION), boto3.client("ssm", region_name=REGION)
    mapping = lam.list_event_source_mappings(FunctionName="processor")["EventSourceMappings"][0]["State"]
    return mapping, ssm.get_parameter(Name="/tandem/dr/processing-enabled")["Parameter"]["Value"]


def test_a_region_that_is_not_active_switches_its_processing_off_and_forwards_its_queue(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    keeper, peer_sqs, peer_queue = _fenced_region(world, enabled=True)  # e.g. a primary that missed its fencing
    for i in range(12):
        world.clients["sqs"].send_message(QueueUrl=world.queue_url, MessageBody=f'{{"n": {i}}}')
    monitor, _ = world.monitor(fence=keeper)
    report = monitor.run(ListSink())
    assert report["fence"]["fenced"] is True
    assert (report["fence"]["active_region"], report["fence"]["epoch"]) == (PEER, 0)  # no failover yet: primary
    assert report["fence"]["processing"] == "us-west-2 processing disabled"
    assert report["fence"]["forwarded"] == {"moved": 12, "refused": 0, "errors": []}
    assert _state(world) == ("Disabled", "false")
    bodies = []
    while batch := peer_sqs.receive_message(QueueUrl=peer_queue, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"])["n"] for m in batch]
    assert sorted(bodies) == list(range(12))


def test_messages_wait_while_the_active_region_does_not_answer(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    keeper, peer_sqs, peer_queue = _fenced_region(world, enabled=False)
    world.clients["sqs"].send_message(QueueUrl=world.queue_url, MessageBody="{}")
    monitor, _ = world.monitor(prober=FakeProber(script=[False] * 6), fence=keeper)
    report = monitor.run(ListSink())
    assert report["fence"]["processing"] == "off"
    assert report["fence"]["forwarding"] == "1 message(s) wait until us-east-1 answers"
    assert "Messages" not in peer_sqs.receive_message(QueueUrl=peer_queue)
    attributes = world.clients["sqs"].get_queue_attributes(QueueUrl=world.queue_url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_the_active_region_keeps_its_processing_and_costs_no_extra_call(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    keeper, _, _ = _fenced_region(world, enabled=True)
    control = ControlStore(world.clients["dynamodb"], TABLE, PEER)
    control.acquire(NewExecution("x1", "switchover", "switchover", REGION), now=world.clock.t, lease_seconds=120)
    world.calls.clear()
    monitor, _ = world.monitor(fence=keeper)
    report = monitor.run(ListSink())
    assert report["fence"] == {"active_region": REGION, "epoch": 1, "fenced": False}
    assert _state(world) == ("Enabled", "true")
    assert len(world.calls) == 14  # the control record came with the last round's heartbeat read
    control.finish("x1", "completed", world.clock.t)
    control.acquire(NewExecution("x2", "failover", "failover", PEER), now=world.clock.t, lease_seconds=120)
    world.calls.clear()
    monitor.run(ListSink())
    # the first and the last round's reads, and - something owed - its epoch item, read beside the last one
    assert world.calls.count("BatchGetItem") == 3


def test_after_an_unplanned_failover_the_active_region_asks_for_reconciliation_once_the_old_one_answers(
    world: World,
) -> None:
    world.peer_writes(seconds_ago=1.0)
    switch = _fenced_region(world, enabled=True)[0].switch
    asked: list[str] = []
    keeper = FenceKeeper(switch, None, ask_handler=asked.append)
    control = ControlStore(world.clients["dynamodb"], TABLE, PEER)
    control.acquire(NewExecution("x1", "failover", "failover", REGION), now=world.clock.t, lease_seconds=120)
    control.finish("x1", "completed", world.clock.t)

    unanswered, _ = world.monitor(prober=FakeProber(script=[False] * 6), fence=keeper)
    assert unanswered.run(ListSink())["fence"]["reconcile"] == f"waits until {PEER} answers"
    assert asked == []
    monitor, _ = world.monitor(fence=keeper)
    assert monitor.run(ListSink())["fence"]["reconcile"] == "asked"
    assert asked == ["reconcile"]

    assert monitor.run(ListSink())["fence"]["reconcile"] == "asked"  # asked again: it may have been waiting
    assert asked == ["reconcile", "reconcile"]
    (owed,) = control.read().owed
    assert control.mark_reconciled(owed) is True  # what a completed reconciliation writes
    assert "reconcile" not in monitor.run(ListSink())["fence"]
    assert asked == ["reconcile", "reconcile"]
    assert control.mark_reconciled(replace(owed, epoch=7)) is False  # not owed: nothing written


def test_an_execution_for_this_region_that_is_stuck_is_resumed_every_run_and_a_live_one_is_left_alone(
    world: World,
) -> None:
    """The wedge (failover issue, finding 1): a step failed and the invocation returned (lease released), or it
    died (lease lapsed); the alarm stays in ALARM and sends nothing new. This region's monitor asks every run."""
    world.peer_writes(seconds_ago=1.0)
    switch = _fenced_region(world, enabled=False)[0].switch
    asked: list[str] = []
    keeper = FenceKeeper(switch, None, ask_handler=asked.append)
    control = ControlStore(world.clients["dynamodb"], TABLE, PEER)
    control.acquire(NewExecution("x1", "failover", "failover", REGION), now=world.clock.t, lease_seconds=120)
    monitor, _ = world.monitor(fence=keeper)
    assert "resume" not in monitor.run(ListSink())["fence"]  # the lease is live: its invocation is at work
    assert asked == []
    control.release("x1", world.clock.t)  # what a failed step leaves: running, lease released
    assert monitor.run(ListSink())["fence"]["resume"] == "asked (execution x1)"
    assert monitor.run(ListSink())["fence"]["resume"] == "asked (execution x1)"
    assert asked == ["resume", "resume"]
    control.finish("x1", "completed", world.clock.t)
    assert "resume" not in monitor.run(ListSink())["fence"]
    assert asked[2:] == ["reconcile"]  # finished: nothing to resume; the failover's reconciliation is owed


def test_every_run_says_whether_automatic_failover_is_armed_from_here(world: World) -> None:
    """FailoverArmed: the peer URL is set, the database observable and the failover rule enabled."""
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="tandem-app-dr-peer-region-impaired", EventPattern='{"source": ["aws.cloudwatch"]}')
    world.peer_writes(seconds_ago=4.0)

    def run(aurora: AuroraObservation = SECONDARY, **env: Any) -> tuple[bool, list[str], list[bool]]:
        monitor, _ = world.monitor(
            aurora, events=events, FAILOVER_RULE_NAME="tandem-app-dr-peer-region-impaired", **env
        )
        sink = ListSink()
        armed = monitor.run(sink)["failover_armed"]
        return armed["armed"], armed["reasons"], sink.armed

    assert run() == (True, [], [True])
    armed, reasons, published = run(PEER_HEALTH_URL="")
    assert (armed, published) == (False, [False])
    assert reasons == ["PEER_HEALTH_URL is empty: the peer's liveness is unknown, so the alarm cannot fire"]
    armed, reasons, _ = run(AuroraObservation(False, error="connection refused"))
    assert reasons == ["the ledger database is not observable: connection refused"]
    events.disable_rule(Name="tandem-app-dr-peer-region-impaired")
    assert run()[1] == ["the failover rule tandem-app-dr-peer-region-impaired is DISABLED"]


# ---------------------------------------------------------------------------------------------- grey failures
WRITER = AuroraObservation(True, writer=True, rpo_lag_seconds=0.0, heartbeat_written=True)


def own_heartbeat(world: World) -> dict[str, Any]:
    item = world.item(heartbeat_key(REGION))
    assert item is not None
    return item


def test_the_active_region_says_with_each_heartbeat_whether_its_ledger_commits(world: World) -> None:
    """The ingress of a region whose database died still answers: only the region itself can tell. Each of
    its heartbeats carries the verdict of an observation taken right before it (the observer is asked again),
    and a failure streak says since when - across runs too (the last verdict rides in the readiness record)."""
    world.peer_writes(seconds_ago=1.0)
    world.calls.clear()
    monitor, _ = world.monitor(WRITER, TANDEM_REGION_ROLE="primary")  # no control record: the primary is active
    monitor.run(ListSink())
    ledger = own_heartbeat(world)["ledger"]
    assert (ledger["ok"], ledger["error"], ledger["failing_since"]) == (True, None, None)
    assert world.calls.count("Invoke observer") == 6  # every round: a dead ledger is seen within one
    assert world.calls.count("PutItem") == 2  # heartbeats every second round while the ledger commits

    dead = AuroraObservation(False, error="observer failed: connection refused")
    first = world.clock.t
    world.calls.clear()
    monitor, _ = world.monitor(dead, TANDEM_REGION_ROLE="primary")
    report = monitor.run(ListSink())
    verdict = own_heartbeat(world)["ledger"]
    assert (verdict["ok"], verdict["error"]) == (False, "observer failed: connection refused")
    assert verdict["failing_since"] == pytest.approx(first)  # the run's first observation
    assert world.calls.count("PutItem") == 5  # while it fails, a heartbeat every round (the last with the record)
    assert "own_database_unreachable" in report["reasons"]
    world.clock.t += 10
    monitor.run(ListSink())
    assert own_heartbeat(world)["ledger"]["failing_since"] == pytest.approx(first)  # the streak goes on


def test_a_failure_streak_does_not_go_on_across_a_gap_in_the_observations(world: World) -> None:
    """The region was down (its monitor silent) after a failed observation: when it is back, one more failed
    observation (a connection the restart dropped) starts a new streak - nothing says the ledger failed all
    along, and 0 s never reaches the alarm."""
    dead = AuroraObservation(False, error="ConnectionRefusedError: [Errno 111] Connection refused")
    monitor, _ = world.monitor(dead, TANDEM_REGION_ROLE="primary", PROBE_COUNT="1")
    monitor.run(ListSink())
    first = own_heartbeat(world)["ledger"]["failing_since"]
    world.clock.t += 25.0  # within three probe intervals: the same streak
    monitor.run(ListSink())
    assert own_heartbeat(world)["ledger"]["failing_since"] == first
    world.clock.t += 31.0  # a gap longer than three probe intervals: a new streak
    monitor.run(ListSink())
    assert own_heartbeat(world)["ledger"]["failing_since"] == pytest.approx(world.clock.t)


def test_a_region_that_is_not_active_gives_no_ledger_verdict_and_asks_the_observer_once(world: World) -> None:
    world.peer_writes(seconds_ago=1.0)
    monitor, _ = world.monitor(AuroraObservation(False, error="down"))  # DR: the primary is active
    monitor.run(ListSink())
    assert "ledger" not in own_heartbeat(world)
    assert world.calls.count("Invoke observer") == 1


def test_a_demoted_writer_a_schema_not_migrated_or_a_crash_recovery_says_nothing_about_the_ledger(
    world: World,
) -> None:
    """A switchover demotes the writer on purpose, a deploy migrates later, and a writer recovering from a crash
    answers 57P03 until it is back (Aurora's own recovery: a region's failover would only race it)."""
    recovering = AuroraObservation(False, error="57P03 the database system is starting up")
    monitor, _ = world.monitor(recovering, TANDEM_REGION_ROLE="primary")
    monitor.run(ListSink())
    assert "ledger" not in own_heartbeat(world)
    for error in ("writer is read-only", "replication_heartbeat table missing (ledger schema not migrated)"):
        observation = AuroraObservation(True, writer=True, heartbeat_error=error)
        monitor, _ = world.monitor(observation, TANDEM_REGION_ROLE="primary")
        monitor.run(ListSink())
        assert "ledger" not in own_heartbeat(world), error


def test_the_peer_saying_its_ledger_fails_is_published_each_round_and_does_not_block_the_takeover(
    world: World,
) -> None:
    """Grey database failure seen from DR: the peer answers, its DynamoDB heartbeat is fresh and says its
    ledger has not committed for 25 s; Aurora's heartbeat here stopped because nothing commits there, not
    because replication stalled - DR stays a takeover target (degraded), and the alarm's metric says 25 s."""
    world.peer_writes(seconds_ago=1.0, ledger=LedgerVerdict(False, "connection refused", world.clock.t - 26.0))
    stopped = replace(SECONDARY, rpo_lag_seconds=None, status_error="no WAL receiver", heartbeat_age_seconds=300.0)
    monitor, _ = world.monitor(stopped)
    sink = ListSink()
    report = monitor.run(sink)
    assert sink.peer_ledger == [pytest.approx(25.0)] * 6  # measured by the peer up to its heartbeat
    assert report["peer"]["ledger_failing"] is True
    assert report["verdict"] == "degraded", report["reasons"]
    assert "aurora_heartbeat_stale" in report["reasons"]

    world.peer_writes(seconds_ago=1.0)  # no verdict: the same Aurora picture is a stall
    report = monitor.run(ListSink())
    assert report["verdict"] == "not_ready"


def test_one_failed_observation_reads_zero_seconds_and_a_committing_peer_zero(world: World) -> None:
    for ledger in (LedgerVerdict(False, "blip", world.clock.t - 1.0), LedgerVerdict(True)):
        world.peer_writes(seconds_ago=1.0, ledger=ledger)
        sink = ListSink()
        world.monitor()[0].run(sink)
        assert sink.peer_ledger == [0.0] * 6


def test_a_ledger_verdict_in_a_stale_heartbeat_is_not_published(world: World) -> None:
    world.peer_writes(seconds_ago=31.0, ledger=LedgerVerdict(False, "connection refused"))
    monitor, _ = world.monitor(HEARTBEAT_STALE_SECONDS="30")
    sink = ListSink()
    monitor.run(sink)
    assert sink.peer_ledger[0] is None

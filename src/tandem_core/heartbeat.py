"""End-to-end heartbeats: a value written in one region and read back from the other region's replica.

The AWS lag metrics can simply stop (no datapoint is not "no lag"); a heartbeat cannot lie that way: if the
peer's heartbeat in our replica is old while the peer itself answers, replication has stalled.

- DynamoDB: item ``pk=HEARTBEAT#<region>, sk=HEARTBEAT`` in the global table, written by its own region
  only. It also carries the writer's outbound lag measurements (:class:`OutboundLag`) to the peer and, from
  the active region, whether its ledger database commits (:class:`LedgerVerdict`): a region whose ingress
  answers while its database cannot commit looks alive from outside, and only it can say otherwise.
- S3: object ``heartbeat/<region>`` in the region's own archive bucket (replicated with the archive, RTC);
  the written time is in the object's metadata, so the peer reads it with a HEAD (no KMS decrypt).
- Aurora: a row of ``replication_heartbeat`` (migration 0002) upserted on the writer, read from the
  secondary cluster, with both times on the database clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import pg8000.native
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from tandem_core.clients import client_for
from tandem_core.control import CONTROL_KEY, ControlRecord, ControlStore
from tandem_core.control import from_item as control_from_item
from tandem_core.database import (
    CONNECTION_ERRORS,
    IamTokenCredentials,
    LedgerConnector,
    SecretCredentials,
    sqlstate,
)
from tandem_core.readiness import readiness_key
from tandem_core.replication import OutboundLag, age
from tandem_core.settings import AwsSettings, LedgerDbSettings

HEARTBEAT_SK = "HEARTBEAT"
S3_PREFIX = "heartbeat/"
WRITTEN_AT = "written-at"  # S3 user metadata key (x-amz-meta-written-at)
EVERY = "every-seconds"  # S3 user metadata key: how often the writer writes it

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def heartbeat_key(region: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"HEARTBEAT#{region}"}, "sk": {"S": HEARTBEAT_SK}}


def s3_heartbeat_key(region: str) -> str:
    return f"{S3_PREFIX}{region}"


def to_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict as DynamoDB attribute values (floats as exact decimals of their repr)."""
    return {k: _SERIALIZER.serialize(_decimals(v)) for k, v in data.items()}


def from_attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_DESERIALIZER.deserialize(v)) for k, v in item.items()}


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decimals(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Beat:
    written_at: float  # epoch seconds, the writer's clock
    every_seconds: float | None = None  # the writer's promise: the next heartbeat follows within this


# ---------------------------------------------------------------------------------------------- DynamoDB
@dataclass(frozen=True)
class LedgerVerdict:
    """The active region's own word on its ledger: did its writer just commit (the Aurora observer's heartbeat
    row)? Written with each of its DynamoDB heartbeats, taken right before. A failing verdict says since when
    the observations have failed without a break (``failing_since``), so the peer can tell one failed
    observation (0 s) from a failure the region itself saw last across rounds (30 s: four in a row)."""

    ok: bool
    error: str | None = None
    failing_since: float | None = None  # the first failed observation of this streak (None when ok)
    observed_at: float | None = None  # the observation this verdict is (a streak goes on only from a recent one)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "error": self.error, "failing_since": self.failing_since, "observed_at": self.observed_at,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> LedgerVerdict | None:
        """None for anything that is not a verdict our monitor wrote."""
        if not isinstance(data, Mapping) or not isinstance(data.get("ok"), bool):
            return None
        error, since, at = data.get("error"), data.get("failing_since"), data.get("observed_at")
        return cls(
            data["ok"], None if error is None else str(error), None if since is None else float(since),
            None if at is None else float(at),
        )  # fmt: skip


#: observer answers that say nothing about the database's health: a writer being demoted on purpose (a
#: switchover), a schema not migrated yet (a deploy) - failing over would not help, so no verdict is given
_NO_VERDICT = ("writer is read-only", "replication_heartbeat table missing")
#: a writer recovering from a crash by itself (SQLSTATE 57P03 "the database system is starting up"): Aurora's
#: own recovery, which a region's failover would only race; a writer that is gone refuses or times out instead
_RECOVERING = "57P03"


def ledger_verdict(
    observation: AuroraObservation, at: float, previous: LedgerVerdict | None = None, max_gap: float = 30.0
) -> LedgerVerdict | None:
    """The verdict of the active region's observation taken at ``at``; None when it says nothing either way.
    ``previous``: the last verdict given, whose failure streak a failed observation continues - only when it was
    observed at most ``max_gap`` seconds before: after a gap (the region itself was down, its monitor silent)
    nothing says the database failed all along, so a new streak starts."""
    if observation.reachable and observation.heartbeat_written:
        return LedgerVerdict(True, observed_at=at)
    if not observation.reachable:
        error = observation.error or "unreachable"
        if _RECOVERING in error:
            return None
    else:
        error = observation.heartbeat_error or ("not the writer" if not observation.writer else "heartbeat not written")
        if any(error.startswith(prefix) for prefix in _NO_VERDICT):
            return None
    since = None
    if previous is not None and not previous.ok and previous.observed_at is not None:
        since = previous.failing_since if 0 <= at - previous.observed_at <= max_gap else None
    return LedgerVerdict(False, error, at if since is None else min(since, at), at)


@dataclass(frozen=True)
class PeerHeartbeat(Beat):
    """The peer's heartbeat item, with the outbound lags and the ledger verdict it carries."""

    region: str = ""
    outbound: OutboundLag = field(default_factory=OutboundLag)
    ledger: LedgerVerdict | None = None  # given by the active region only

    def ledger_failing(self, now: float, stale_after: float) -> bool | None:
        """Does the peer say its ledger cannot commit? None: no verdict, or one in a heartbeat older than
        ``stale_after`` (the staleness threshold: a silent peer is the other signal's business, not this one's)."""
        if self.ledger is None or age(now, self.written_at) > stale_after:
            return None
        return not self.ledger.ok

    def ledger_failing_seconds(self, now: float, stale_after: float) -> float | None:
        """For how long the peer says its ledger has failed, by its own observations (0: it commits; None: no
        verdict, or a stale one). Measured by the peer up to its heartbeat, never extrapolated from here."""
        failing = self.ledger_failing(now, stale_after)
        if failing is None or self.ledger is None:
            return None
        if not failing or self.ledger.failing_since is None:
            return 0.0
        return age(self.written_at, self.ledger.failing_since)


class ControlItems:
    """This region's heartbeat (and readiness record) in the global table, and the peer's heartbeat.

    One call per operation: a single put, or a BatchWriteItem when the readiness record goes with the
    heartbeat. Writes are unconditional - each item is written by its own region only (IAM enforces it
    with ``dynamodb:LeadingKeys``), so there is nothing to race with.
    """

    def __init__(self, dynamodb: Any, table: str, region: str, peer_region: str) -> None:
        self._db = dynamodb
        self._table = table
        self._region = region
        self._peer = peer_region

    def write_heartbeat(
        self,
        now: float,
        outbound: OutboundLag,
        extra: Sequence[dict[str, Any]] = (),
        every_seconds: float | None = None,
        ledger: LedgerVerdict | None = None,
    ) -> None:
        """``every_seconds``: how often we write it (None: no promise), so the peer can tell it is overdue;
        ``ledger``: the active region's verdict on its ledger (None: not the active region, or no verdict)."""
        data: dict[str, Any] = {"region": self._region, "written_at": round(now, 3), "outbound": outbound.as_dict()}
        if every_seconds is not None:
            data["every_seconds"] = round(every_seconds, 3)
        if ledger is not None:
            data["ledger"] = ledger.as_dict()
        item = {**heartbeat_key(self._region), **to_attributes(data)}
        if not extra:
            self._db.put_item(TableName=self._table, Item=item)
            return
        requests = [{"PutRequest": {"Item": i}} for i in (item, *extra)]
        response = self._db.batch_write_item(RequestItems={self._table: requests})
        if response.get("UnprocessedItems"):
            left = len(response["UnprocessedItems"].get(self._table, []))
            raise RuntimeError(f"DynamoDB left {left} control items unwritten")

    def read_peer_heartbeat(self) -> PeerHeartbeat | None:
        """The peer's heartbeat as this region's replica holds it (strongly consistent within the region)."""
        response = self._db.get_item(TableName=self._table, Key=heartbeat_key(self._peer), ConsistentRead=True)
        return _peer_heartbeat(response.get("Item"))

    def read_last_round(self, initial_active_region: str | None, *, settle: bool = True) -> LastRound:
        """The peer's heartbeat, our own last readiness record and (``initial_active_region`` given) the control
        record, in one BatchGetItem: the run's last round judges by all three.

        Our previous record carries the last lag measured per store: once the peer goes silent the lag can no
        longer be measured, and that carried value is what a failover would lose. ``settle`` False: the control
        record as stored, its reconciliation debts not checked against the epoch items (no second read).
        """
        keys = [heartbeat_key(self._peer), readiness_key(self._region)]
        if initial_active_region is not None:
            keys.append(CONTROL_KEY)
        response = self._db.batch_get_item(RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}})
        if response.get("UnprocessedKeys"):
            raise RuntimeError("DynamoDB left the heartbeat, the readiness or the control record unread")
        items = {i.get("pk", {}).get("S"): i for i in response.get("Responses", {}).get(self._table, [])}
        control = items.get(CONTROL_KEY["pk"]["S"])
        record = None
        if initial_active_region is not None:
            record = (
                ControlRecord(active_region=initial_active_region, epoch=0, exists=False)
                if control is None
                else control_from_item(control)
                if not settle  # what is owed is settled by the epoch items (one more read, only then)
                else ControlStore(self._db, self._table, initial_active_region).settled(control_from_item(control))
            )
        previous = items.get(readiness_key(self._region)["pk"]["S"])
        return LastRound(
            _peer_heartbeat(items.get(heartbeat_key(self._peer)["pk"]["S"])),
            record,
            None if previous is None else from_attributes(previous),
        )


@dataclass(frozen=True)
class LastRound:
    """What the run's last round read from this region's replica of the global table."""

    peer_heartbeat: PeerHeartbeat | None
    control: ControlRecord | None  # None: not asked for (no fencing)
    previous_readiness: dict[str, Any] | None  # our own last record (None: the first run)


def _peer_heartbeat(raw: Mapping[str, Any] | None) -> PeerHeartbeat | None:
    if raw is None:
        return None
    try:
        data = from_attributes(raw)
        outbound = OutboundLag.from_dict(data.get("outbound"))
        every = data.get("every_seconds")
        every_seconds = float(every) if every is not None and float(every) > 0 else None
        ledger = LedgerVerdict.from_dict(data.get("ledger"))
        return PeerHeartbeat(
            written_at=float(data["written_at"]), every_seconds=every_seconds, region=str(data["region"]),
            outbound=outbound, ledger=ledger,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # not a heartbeat our monitor wrote: as good as none


# ---------------------------------------------------------------------------------------------- S3
class BucketHeartbeats:
    """``heartbeat/<region>`` in our own archive bucket; the peer's copy arrives by bucket replication."""

    def __init__(self, s3: Any, bucket: str, region: str, peer_region: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._region = region
        self._peer = peer_region

    def write(self, now: float, every_seconds: float | None = None) -> None:
        """``every_seconds``: how often we write it (None: no promise), so the peer can tell it is overdue."""
        written = f"{now:.3f}"
        metadata = {WRITTEN_AT: written} | ({} if every_seconds is None else {EVERY: f"{every_seconds:.3f}"})
        self._s3.put_object(
            Bucket=self._bucket,
            Key=s3_heartbeat_key(self._region),
            Body=json.dumps({"region": self._region, "written_at": float(written)}).encode(),
            ContentType="application/json",
            Metadata=metadata,
        )

    def read_peer(self) -> Beat | None:
        """When the peer wrote the copy our bucket holds, and its promise; None when there is none."""
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=s3_heartbeat_key(self._peer))
        except ClientError as exc:
            # Without s3:ListBucket a missing key answers 403 rather than 404: both mean "not here for us".
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound", "403", "AccessDenied"}:
                return None
            raise
        metadata = head.get("Metadata", {})
        try:
            every = float(metadata[EVERY]) if EVERY in metadata else None
            return Beat(float(metadata[WRITTEN_AT]), every if every is not None and every > 0 else None)
        except (KeyError, ValueError):
            return None  # not a heartbeat our monitor wrote: as good as none


# ---------------------------------------------------------------------------------------------- Aurora
@dataclass(frozen=True)
class AuroraObservation:
    """What this region's Aurora cluster says about replication into it (all times on the DB clock)."""

    reachable: bool
    error: str | None = None
    writer: bool | None = None
    rpo_lag_seconds: float | None = None  # our own row of aurora_global_db_status(); 0 on the writer
    status_age_seconds: float | None = None  # age of that row's last_lag_calculation_time
    status_error: str | None = None
    heartbeat_written: bool = False
    heartbeat_age_seconds: float | None = None  # the writer's heartbeat row, read on a secondary
    heartbeat_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuroraObservation:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if not isinstance(known.get("reachable"), bool):
            raise ValueError("not an Aurora observation: 'reachable' must be a boolean")
        return cls(**known)


class AuroraSource(Protocol):
    def observe(self) -> AuroraObservation: ...


_STATUS = (
    "SELECT rpo_lag_in_msec, CAST(extract(epoch FROM clock_timestamp() - last_lag_calculation_time) AS float8)"
    " FROM aurora_global_db_status() WHERE aws_region = :region"
)
_WRITE_HEARTBEAT = (
    "INSERT INTO replication_heartbeat (region, written_at) VALUES (:region, clock_timestamp())"
    " ON CONFLICT (region) DO UPDATE SET written_at = EXCLUDED.written_at, beats = replication_heartbeat.beats + 1"
)
_READ_HEARTBEAT = (
    "SELECT CAST(extract(epoch FROM clock_timestamp() - written_at) AS float8) FROM replication_heartbeat"
    " WHERE region <> :region ORDER BY written_at DESC LIMIT 1"
)
_UNDEFINED_FUNCTION, _UNDEFINED_TABLE = "42883", "42P01"


class LedgerAurora:
    """Reads through the cluster's reader endpoint and, in the writer region, writes the heartbeat through its
    writer (cluster) endpoint - with the ledger connection code: TLS, secret credentials.

    A global secondary's writer endpoint is inactive until promotion, so everything an observer must see in
    every region (is this cluster the writer, the replication status, the writer's heartbeat row) is read
    through the reader endpoint, which answers in both. Whether this cluster is the writer comes from the
    database itself, never from a deployment parameter, so it stays right after a failover: the reader
    endpoint reached the writer instance (``pg_is_in_recovery()`` false: a cluster without replicas), or
    ``aurora_global_db_status()`` marks this region as the primary (-1). Nothing here migrates the schema:
    without the ``replication_heartbeat`` table the heartbeat reads as missing.
    """

    def __init__(self, connector: LedgerConnector, region: str, writer: LedgerConnector | None = None) -> None:
        self._reader = connector
        self._writer = writer or connector
        self._region = region

    def observe(self) -> AuroraObservation:
        """One observation; a failure on a connection kept from an earlier run (a Lambda environment thawed after
        the database restarted) is tried once more on a fresh one - a dead connection is not a dead database."""
        reused = self._reader.holds_connection
        observation = self._observe_once()
        return self._observe_once() if reused and not observation.reachable else observation

    def _observe_once(self) -> AuroraObservation:
        try:
            conn = self._reader.connection()
            rows = conn.run("SELECT pg_is_in_recovery()") or [[None]]
            in_recovery = rows[0][0] is not False
            status, primary = self._status(conn) if in_recovery else ((0.0, None, None), True)
            writer = not in_recovery or primary
            heartbeat = self._write_heartbeat(conn) if writer else self._read_heartbeat(conn)
        except (*CONNECTION_ERRORS, pg8000.native.DatabaseError) as exc:
            self._reader.discard()  # unknown state: the next run opens a fresh connection
            return AuroraObservation(reachable=False, error=_describe(exc))
        return AuroraObservation(True, None, writer, *status, *heartbeat)

    def _status(self, conn: pg8000.native.Connection) -> tuple[tuple[float | None, float | None, str | None], bool]:
        """Our own row of aurora_global_db_status(): the RPO lag into this (secondary) cluster; and whether
        Aurora says this cluster is the primary."""
        try:
            rows = conn.run(_STATUS, region=self._region) or []
        except pg8000.native.DatabaseError as exc:
            if sqlstate(exc) != _UNDEFINED_FUNCTION:
                raise
            return (None, None, "aurora_global_db_status() is not available"), False
        if not rows:
            return (None, None, f"aurora_global_db_status() has no row for {self._region}"), False
        rpo_ms, calc_age = rows[0]
        if rpo_ms is not None and int(rpo_ms) == -1:
            return (0.0, None, None), True
        if rpo_ms is None:
            return (None, None, "rpo_lag_in_msec is null"), False
        lag = max(0.0, float(rpo_ms) / 1000)
        return (lag, None if calc_age is None else max(0.0, float(calc_age)), None), False

    def _write_heartbeat(self, read: pg8000.native.Connection) -> tuple[bool, float | None, str | None]:
        """The writer's row, through the writer endpoint (the reader connection when both are one)."""
        try:
            conn = read if self._writer is self._reader else self._writer.connection()
            conn.run(_WRITE_HEARTBEAT, region=self._region)
        except pg8000.native.DatabaseError as exc:
            if sqlstate(exc) == _UNDEFINED_TABLE:
                return False, None, "replication_heartbeat table missing (ledger schema not migrated)"
            if sqlstate(exc) == "25006":  # read-only: a writer being demoted right now
                return False, None, "writer is read-only"
            if self._writer is self._reader:
                raise
            self._writer.discard()
            return False, None, f"writer endpoint: {_describe(exc)}"
        except CONNECTION_ERRORS as exc:
            if self._writer is self._reader:
                raise
            self._writer.discard()  # the database stays observable through its reader endpoint
            return False, None, f"writer endpoint unreachable: {_describe(exc)}"
        return True, None, None

    def _read_heartbeat(self, conn: pg8000.native.Connection) -> tuple[bool, float | None, str | None]:
        try:
            rows = conn.run(_READ_HEARTBEAT, region=self._region) or []
        except pg8000.native.DatabaseError as exc:
            if sqlstate(exc) == _UNDEFINED_TABLE:
                return False, None, "replication_heartbeat table missing (ledger schema not migrated)"
            raise
        if not rows:
            return False, None, "no heartbeat row from the writer"
        return False, max(0.0, float(rows[0][0])), None


def ledger_aurora_from_env(aws: AwsSettings) -> LedgerAurora:
    """A :class:`LedgerAurora` on this region's ledger database, configured by the LEDGER_DB_* variables: the
    reader endpoint (LEDGER_DB_READER_HOST) for reading when set, the cluster endpoint for the heartbeat."""
    db = LedgerDbSettings.from_env()
    credentials: SecretCredentials | IamTokenCredentials
    if db.auth == "iam":
        credentials = IamTokenCredentials(client_for("rds", aws), db, aws.region)
    else:
        credentials = SecretCredentials(client_for("secretsmanager", aws), db.secret_arn or "")
    writer = LedgerConnector(db, credentials)
    if not db.reader_host or db.reader_host == db.host:
        return LedgerAurora(writer, aws.region)
    reader = LedgerConnector(db.model_copy(update={"host": db.reader_host}), credentials)
    return LedgerAurora(reader, aws.region, writer=writer)


class InvokedAurora:
    """The same observation from the in-VPC observer function (the monitor itself runs outside the VPC)."""

    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._lambda = lambda_client
        self._function = function_name

    def observe(self) -> AuroraObservation:
        try:
            response = self._lambda.invoke(FunctionName=self._function, InvocationType="RequestResponse", Payload=b"{}")
            payload = response["Payload"].read()
            data = json.loads(payload or b"null")
            if response.get("FunctionError"):
                message = data.get("errorMessage", "") if isinstance(data, dict) else ""
                return AuroraObservation(reachable=False, error=f"observer failed: {message}"[:300])
            if not isinstance(data, dict):
                raise ValueError("observer answered something other than a JSON object")
            return AuroraObservation.from_dict(data)
        except Exception as exc:  # any failure to observe is "cannot reach our database", never a crash
            return AuroraObservation(reachable=False, error=f"observer unreachable: {_describe(exc)}"[:300])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, dict):
        return f"{detail.get('C', '')} {detail.get('M', '')}".strip()
    return f"{type(exc).__name__}: {exc}"[:200]

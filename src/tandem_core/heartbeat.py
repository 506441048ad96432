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
  secondary cluster, with both times on the database clock (:mod:`tandem_core.aurora_observer`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from tandem_core.control import CONTROL_KEY, ControlRecord, ControlStore
from tandem_core.control import from_item as control_from_item
from tandem_core.readiness import readiness_key
from tandem_core.replication import OutboundLag, age

if TYPE_CHECKING:  # the observer pulls in the database driver; a verdict only reads its fields
    from tandem_core.aurora_observer import AuroraObservation

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

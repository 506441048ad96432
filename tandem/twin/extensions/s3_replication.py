"""S3 replication (CRR/SRR) for moto 5.2.5, following each bucket's replication configuration.

moto stores ``PutBucketReplication`` configurations (and refuses them on unversioned buckets, as AWS does)
but copies nothing, and its objects have no replication status. This module:

- hooks ``S3Backend.put_object``, the funnel of PutObject, POST uploads, CopyObject and
  CompleteMultipartUpload: a new object version in a versioned bucket whose configuration has an enabled
  rule for its key becomes ``PENDING`` and is queued on the active :class:`S3Replicator`, stamped with the
  twin clock;
- copies it in :meth:`S3Replicator.tick` once ``delay_seconds`` (emulated) have passed: same key, version id,
  body, content type, metadata, tags and last-modified, into each destination bucket (moto keeps all of an
  account's buckets, whatever their region, in one backend per partition); the copy is ``REPLICA``, the
  source ``COMPLETED`` (``FAILED`` when the destination is missing or unversioned);
- adds ``x-amz-replication-status`` to the object's response headers (``FakeKey.response_dict``), so
  HeadObject/GetObject report ``ReplicationStatus``;
- answers ``GetBucketReplication`` with the rules as stored (moto answers every rule with ``Filter.Prefix``
  "" and ``DeleteMarkerReplication`` Disabled, whatever was put, so a reader would see another configuration
  than the one that replicates).

A replica is never replicated again (AWS only does so with ReplicaModifications/two-way setups; we keep it
simple). Deletes and delete markers are not replicated (the V2 default, DeleteMarkerReplication Disabled).
Rules are matched on Prefix (rule-level V1 ``Prefix``, ``Filter.Prefix``, ``Filter.And.Prefix``) and tags
(``Filter.Tag``, ``Filter.And.Tag``); tags are only known once the PutObject request finishes, so an object is
queued on its prefix and the full filter is checked when it is copied (a tag mismatch then drops it and
clears its status). Among rules with the same destination, the highest ``Priority`` wins, as in AWS.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from moto.core.responses import ActionResult
from moto.s3.exceptions import MissingBucket, ReplicationConfigurationNotFoundError
from moto.s3.models import FakeKey, S3Backend, s3_backends
from moto.s3.responses import S3Response

from tandem import moto_ext
from tandem.twin.clock import TwinClock
from tandem.twin.extensions import MinutePublisher
from tandem.twin.extensions.holds import RegionHolds

log = logging.getLogger(__name__)

STATUS_ATTR = "tandem_replication_status"  # set on moto FakeKey objects: PENDING/COMPLETED/FAILED/REPLICA


class Clock(Protocol):
    def now(self) -> float: ...


class RuleKey(NamedTuple):
    """One replication rule as CloudWatch names it, with the source bucket's region (where AWS publishes)."""

    region: str
    source_bucket: str
    destination_bucket: str
    rule_id: str


@dataclass(frozen=True)
class PendingObject:
    """An object version waiting to be copied; ``key`` is moto's FakeKey, read when the copy happens."""

    timestamp: float
    bucket: str
    key_name: str
    version_id: str
    key: Any


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.replicating = False  # writing a replica: not a new object to replicate


_thread = _ThreadState()
# The replicator the hook reports to. Module-level because moto's classes (and so the hook) are global to the
# process; the twin daemon activates exactly one. ``None``: nothing is queued or copied.
_active: S3Replicator | None = None


@dataclass(frozen=True)
class _Rule:
    priority: int
    prefix: str
    tags: dict[str, str]
    destination: str  # bucket name
    storage_class: str | None
    rule_id: str = ""

    def matches(self, key: str, tags: dict[str, str] | None) -> bool:
        """Prefix always; tags only when known (``None``: not yet)."""
        if not key.startswith(self.prefix):
            return False
        return tags is None or all(tags.get(k) == v for k, v in self.tags.items())


def _tag_dict(raw: Any) -> dict[str, str]:
    tags = raw if isinstance(raw, list) else [raw] if raw else []
    return {tag["Key"]: tag.get("Value") or "" for tag in tags}


def _rules(bucket: Any) -> list[_Rule]:
    """The enabled rules of ``bucket``'s replication configuration, as moto stored the XML."""
    config = getattr(bucket, "replication", None)
    if not config:
        return []
    raw_rules = config.get("Rule") or []
    rules = []
    for raw in raw_rules if isinstance(raw_rules, list) else [raw_rules]:
        if raw.get("Status") != "Enabled":
            continue
        if "Filter" in raw:  # V2 configuration
            filt = raw.get("Filter") or {}
            scope = (filt.get("And") or {}) if "And" in filt else filt
            prefix, tags = scope.get("Prefix") or "", _tag_dict(scope.get("Tag"))
        else:  # V1: rule-level Prefix
            prefix, tags = raw.get("Prefix") or "", {}
        destination = raw.get("Destination") or {}
        rules.append(
            _Rule(
                priority=int(raw.get("Priority") or 0),
                prefix=prefix,
                tags=tags,
                destination=str(destination.get("Bucket", "")).split(":")[-1],
                storage_class=destination.get("StorageClass"),
                rule_id=str(raw.get("ID") or ""),
            )
        )
    return rules


def _destinations(bucket: Any, key: str, tags: dict[str, str] | None) -> list[_Rule]:
    """For each destination bucket, the highest-priority enabled rule matching ``key``."""
    chosen: dict[str, _Rule] = {}
    for rule in _rules(bucket):
        if rule.matches(key, tags) and (
            rule.destination not in chosen or rule.priority > chosen[rule.destination].priority
        ):
            chosen[rule.destination] = rule
    return list(chosen.values())


def _regions_of(item: PendingObject) -> set[str]:
    """The source bucket's region and every destination bucket's (a bucket gone meanwhile names none)."""
    backend = s3_backends[item.key.account_id][item.key.partition]
    try:
        bucket = backend.get_bucket(item.bucket)
    except MissingBucket:
        return set()
    regions = {str(bucket.region_name)}
    for rule in _destinations(bucket, item.key_name, None):
        with contextlib.suppress(MissingBucket):
            regions.add(str(backend.get_bucket(rule.destination).region_name))
    return regions


def replication_status(key: Any) -> str | None:
    """The replication status of a moto FakeKey (None: not subject to replication)."""
    status = getattr(key, STATUS_ATTR, None)
    return str(status) if status is not None else None


class S3Replicator:
    """Copies new objects to their replication destinations ``delay_seconds`` (emulated) after the put."""

    def __init__(
        self, delay_seconds: float = 2.0, clock: Clock | None = None, holds: RegionHolds | None = None
    ) -> None:
        if delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        self.delay_seconds = delay_seconds
        self.holds = holds if holds is not None else RegionHolds()  # an outage's or a partition's border
        self._clock: Clock = clock if clock is not None else TwinClock()
        self._queue: deque[PendingObject] = deque()
        self._buckets: set[str] = set()
        self._sources: dict[str, tuple[str, str]] = {}  # source bucket -> (account, partition)
        self._observed: dict[RuleKey, float] = {}  # copy latency (emulated s), max since the last drain
        self._paused = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ control
    def pause(self) -> None:
        """Stop copying (new objects keep being queued), e.g. to simulate a replication backlog."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def clear(self) -> None:
        """Forget queued objects (after the emulator's state was reset)."""
        with self._lock:
            self._queue.clear()
            self._buckets.clear()

    # ------------------------------------------------------------------ monitoring
    def pending(self, bucket: str | None = None) -> int:
        """Object versions queued but not yet copied (from one source bucket, or all)."""
        with self._lock:
            return sum(1 for item in self._queue if bucket is None or item.bucket == bucket)

    def lag(self, bucket: str, now: float | None = None) -> float:
        """Age in emulated seconds of the oldest object of ``bucket`` not yet copied (0.0 when caught up)."""
        return self.lags(now).get(bucket, 0.0)

    def lags(self, now: float | None = None) -> dict[str, float]:
        """:meth:`lag` for every source bucket that has had an object to replicate."""
        at = self._clock.now() if now is None else now
        with self._lock:
            result = dict.fromkeys(self._buckets, 0.0)
            for item in self._queue:
                result[item.bucket] = max(result[item.bucket], at - item.timestamp)
        return result

    # ------------------------------------------------------------------ recording (called by the hook)
    def record(self, bucket: str, key: Any) -> None:
        with self._lock:
            setattr(key, STATUS_ATTR, "PENDING")
            self._buckets.add(bucket)
            self._sources[bucket] = (key.account_id, key.partition)
            self._queue.append(PendingObject(self._clock.now(), bucket, key.name, key.version_id, key))

    # ------------------------------------------------------------------ copying
    def tick(self, now: float) -> None:
        """Copy every queued object at least ``delay_seconds`` old, oldest first (nothing while paused); an
        object the holds keep back (its bucket's or a destination's region held, or a released backlog's
        pace) waits in place."""
        with self._lock:
            if self._paused:
                return
            if self.holds.quiet:
                while self._queue and self._queue[0].timestamp + self.delay_seconds <= now:
                    self._copy_now(self._queue.popleft(), now)
                return
            kept: deque[PendingObject] = deque()
            pending: set[str] = set()
            while self._queue:
                item = self._queue.popleft()
                if item.timestamp + self.delay_seconds > now:
                    self._queue.appendleft(item)  # this one and every later one are too young
                    break
                regions = _regions_of(item)
                if self.holds.passes(regions, now):
                    self._copy_now(item, now)
                else:
                    kept.append(item)
                    pending |= regions
            kept.extend(self._queue)
            pending |= {r for item in self._queue for r in _regions_of(item)}
            self._queue = kept
            self.holds.settle(pending)

    def _copy_now(self, item: PendingObject, now: float) -> None:
        try:
            self._replicate(item, now)
        except Exception:
            log.exception("could not replicate s3://%s/%s", item.bucket, item.key_name)
            setattr(item.key, STATUS_ATTR, "FAILED")

    def _replicate(self, item: PendingObject, now: float) -> None:
        src: Any = item.key
        if src.disposed:
            return  # the version was deleted before it could be copied
        backend = s3_backends[src.account_id][src.partition]
        bucket = backend.get_bucket(item.bucket)
        tags = backend.tagger.get_tag_dict_for_resource(src.arn)
        rules = _destinations(bucket, item.key_name, tags)
        if not rules:
            setattr(src, STATUS_ATTR, None)  # a tag filter excluded it after all
            return
        done = [self._copy(backend, src, rule, tags) for rule in rules]
        for rule, copied in zip(rules, done, strict=True):
            if copied:
                key = RuleKey(bucket.region_name, item.bucket, rule.destination, rule.rule_id)
                self._observed[key] = max(self._observed.get(key, 0.0), now - item.timestamp)
        setattr(src, STATUS_ATTR, "COMPLETED" if all(done) else "FAILED")

    # ------------------------------------------------------------------ what AWS publishes (RTC metrics)
    def drain_rule_metrics(self, now: float) -> dict[RuleKey, tuple[float | None, int]]:
        """Per replication rule of every bucket seen: (latency, pending operations), then a new period.

        Latency is how far the destination is behind (S3's definition for ReplicationLatency): the slowest
        copy made since the last call, or the age of the oldest object still waiting, whichever is more -
        so a stalled rule's latency keeps rising. None when nothing was copied and nothing waits (AWS then
        publishes no latency datapoint). Seconds are emulated.
        """
        with self._lock:
            observed, self._observed = self._observed, {}
            out: dict[RuleKey, tuple[float | None, int]] = {}
            for name, (account, partition) in self._sources.items():
                try:
                    bucket = s3_backends[account][partition].get_bucket(name)
                except MissingBucket:
                    continue  # deleted meanwhile
                for rule in _rules(bucket):
                    key = RuleKey(bucket.region_name, name, rule.destination, rule.rule_id)
                    out[key] = (observed.get(key), 0)
            for item in self._queue:
                key_rules = self._rules_of(item)
                for key in key_rules:
                    latency, count = out.get(key, (None, 0))
                    behind = now - item.timestamp
                    out[key] = (behind if latency is None else max(latency, behind), count + 1)
            for key, latency in observed.items():
                out.setdefault(key, (latency, 0))
            return out

    def _rules_of(self, item: PendingObject) -> list[RuleKey]:
        account, partition = self._sources.get(item.bucket, ("", ""))
        try:
            bucket = s3_backends[account][partition].get_bucket(item.bucket)
        except (MissingBucket, KeyError):
            return []
        return [
            RuleKey(bucket.region_name, item.bucket, r.destination, r.rule_id)
            for r in _destinations(bucket, item.key_name, None)
        ]

    def _copy(self, backend: Any, src: Any, rule: _Rule, tags: dict[str, str]) -> bool:
        try:
            dest_bucket = backend.get_bucket(rule.destination)
        except Exception:
            log.warning("replication destination bucket %s does not exist", rule.destination)
            return False
        if not dest_bucket.is_versioned:
            log.warning("replication destination bucket %s is not versioned", rule.destination)
            return False
        dest_backend = s3_backends[dest_bucket.account_id][dest_bucket.partition]
        _thread.replicating = True
        try:
            replica = dest_backend.put_object(
                dest_bucket.name,
                src.name,
                src.value,
                storage=rule.storage_class or src.storage_class,
                encryption=src.encryption,
                kms_key_id=src.kms_key_id,
                bucket_key_enabled=src.bucket_key_enabled,
            )
        finally:
            _thread.replicating = False
        replica._version_id = src.version_id  # S3 replication keeps the version id
        replica.last_modified = src.last_modified
        replica.set_metadata(dict(src.metadata))
        replica.website_redirect_location = src.website_redirect_location
        if tags:
            dest_backend.tagger.tag_resource(replica.arn, [{"Key": k, "Value": v} for k, v in tags.items()])
        setattr(replica, STATUS_ATTR, "REPLICA")
        return True


class RuleMetricsPublisher(MinutePublisher):
    """``AWS/S3 ReplicationLatency`` (Seconds) and ``OperationsPendingReplication`` (Count) per rule
    (SourceBucket, DestinationBucket, RuleId) in the source bucket's region, as S3 Replication Time Control
    publishes them, from the replicator's queue. Nothing is published for a source region that is down."""

    def __init__(self, replicator: S3Replicator, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replicator = replicator

    def publish(self, now: float) -> None:
        stamp = self._stamp()
        per_region: dict[str, list[dict[str, Any]]] = {}
        for key, (latency, pending) in sorted(self._replicator.drain_rule_metrics(now).items()):
            dims = [
                {"Name": "SourceBucket", "Value": key.source_bucket},
                {"Name": "DestinationBucket", "Value": key.destination_bucket},
                {"Name": "RuleId", "Value": key.rule_id},
            ]
            data = per_region.setdefault(key.region, [])
            data.append({"MetricName": "OperationsPendingReplication", "Unit": "Count", "Value": float(pending),
                         "Timestamp": stamp, "Dimensions": dims})  # fmt: skip
            if latency is not None:
                data.append({"MetricName": "ReplicationLatency", "Unit": "Seconds", "Timestamp": stamp,
                             "Value": round(self._real_seconds(latency), 3), "Dimensions": dims})  # fmt: skip
        self._send("AWS/S3", per_region)


def set_active(replicator: S3Replicator | None) -> None:
    """Make ``replicator`` the one the put_object hook reports to (``None``: stop replicating)."""
    global _active
    _active = replicator


def active() -> S3Replicator | None:
    return _active


def install(replicator: S3Replicator | None = None) -> None:
    """Patch moto (once per process); if ``replicator`` is given, make it the active one."""
    _patch()
    if replicator is not None:
        set_active(replicator)


# ---------------------------------------------------------------------------------------------- hooks


def _wrap_put_object(original: Callable[..., Any]) -> Callable[..., Any]:
    def put_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        key = original(self, bucket_name, key_name, *args, **kwargs)
        replicator = _active
        if replicator is None or _thread.replicating:
            return key
        bucket = self.get_bucket(bucket_name)
        if bucket.is_versioned and _destinations(bucket, key_name, None):
            replicator.record(bucket.name, key)
        return key

    return put_object


def _wrap_response_dict(original: property) -> property:
    fget = original.fget
    assert fget is not None

    def response_dict(self: FakeKey) -> dict[str, Any]:
        headers: dict[str, Any] = fget(self)
        status = replication_status(self)
        if status is not None:
            headers["x-amz-replication-status"] = status
        return headers

    return property(response_dict)


def _get_bucket_replication(self: S3Response) -> Any:
    """GetBucketReplication with each rule as it was put (ID, Priority, Status, Filter, Destination, ...)."""
    self.data["Action"] = "GetBucketReplication"
    replication = self.backend.get_bucket_replication(self.bucket_name)
    if not replication:
        raise ReplicationConfigurationNotFoundError(bucket_name=self.bucket_name)
    stored = replication["Rule"] if isinstance(replication["Rule"], list) else [replication["Rule"]]
    rules = [_typed_rule(rule) for rule in stored]
    result = {"ReplicationConfiguration": {"Role": replication["Role"], "Rules": rules}}
    return self.serialized(ActionResult(result))


def _typed_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A stored rule (parsed XML: every value a string) in the API's shape, with its numbers as numbers."""

    def typed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return value

    out = {k: typed(v) for k, v in rule.items()}
    if "Filter" in out and out["Filter"] is None:
        out["Filter"] = {"Prefix": ""}
    if isinstance(out.get("Filter"), dict) and out["Filter"].get("Prefix") is None and "Prefix" in out["Filter"]:
        out["Filter"]["Prefix"] = ""
    return out


@functools.cache
def _patch() -> None:
    moto_ext.apply()
    patches: list[tuple[type, str, Callable[[Any], Any]]] = [
        (S3Backend, "put_object", _wrap_put_object),
        (FakeKey, "response_dict", _wrap_response_dict),
    ]
    for cls, name, wrap in patches:
        setattr(cls, name, wrap(cls.__dict__[name]))  # the raw attribute: response_dict is a property
    S3Response.get_bucket_replication = _get_bucket_replication  # type: ignore[method-assign]

"""DynamoDB global tables (version 2019.11.21) for moto 5.2.5: replicas, and replication with a lag.

moto ignores ``UpdateTable(ReplicaUpdates=...)`` and keeps one independent table per region backend
(``dynamodb_backends[account][region]``), so nothing replicates. This module adds:

- replica management: ``ReplicaUpdates`` Create/Delete on ``UpdateTable`` create (and backfill) or delete the
  same-named table in the other region and record the replication group on every member (an attribute on
  moto's ``Table``, so ``/moto-api/reset`` forgets it with the tables); ``DescribeTable`` then lists the other
  regions under ``Replicas`` with ``GlobalTableVersion`` 2019.11.21. Twin leniency: a Create may adopt an
  already existing, *empty* table with the same key schema in the target region, because each twin region
  is provisioned from its regional template before the tables are joined (AWS would refuse).
- change capture: every item write to a replicated table is recorded by the :class:`DynamoReplicator` that
  is active (see :func:`install`), stamped with the twin clock. All item writes funnel through
  ``Table.put_item`` / ``Table.delete_item`` (PutItem, BatchWriteItem, TransactWriteItems, PartiQL) except
  ``UpdateItem``, which mutates the stored item in place after ``DynamoDBBackend.update_item`` looked it up;
  so those three are wrapped. ``transact_write_items`` is wrapped too, because moto rolls a failed
  transaction back by restoring deep copies of the tables: its writes are recorded only if it commits.
- apply: :meth:`DynamoReplicator.tick` applies changes older than the lag to the other regions, last writer
  wins by (timestamp, region) as in AWS, and a replicated write is never recorded again (no ping-pong).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler

from tandem import moto_ext
from tandem.twin.clock import TwinClock
from tandem.twin.extensions import MinutePublisher
from tandem.twin.extensions.holds import RegionHolds

log = logging.getLogger(__name__)

GLOBAL_TABLE_VERSION = "2019.11.21"
# Set on moto ``Table`` objects: every region of the table's replication group (sorted), itself included.
REPLICAS_ATTR = "tandem_replica_regions"


class Clock(Protocol):
    def now(self) -> float: ...


KeyId = tuple[Hashable, Hashable]  # (hash key, range key) as plain hashable values


@dataclass(frozen=True)
class Change:
    """One item write to replay in ``target_region``: the new image, or ``None`` for a deletion."""

    timestamp: float
    account_id: str
    source_region: str
    target_region: str
    table: str
    hash_key: Any  # moto DynamoType
    range_key: Any  # moto DynamoType or None
    image: dict[str, Any] | None = field(repr=False)

    @property
    def key_id(self) -> KeyId:
        return _key_id(self.hash_key, self.range_key)


@dataclass
class _Write:
    """A write seen by a hook, not yet stamped (transactions stamp theirs when they commit)."""

    account_id: str
    region: str
    table: str
    regions: tuple[str, ...]
    hash_key: Any
    range_key: Any
    image: dict[str, Any] | None


class _ThreadState(threading.local):
    """Per request thread: what the hooks must do with the writes they see."""

    def __init__(self) -> None:
        self.replaying = False  # applying a replicated change: record nothing
        self.transaction: list[_Write] | None = None  # inside TransactWriteItems: record on commit
        self.update_depth = 0  # inside UpdateItem: its nested put_item is not the final image
        self.update_touched: list[tuple[Table, Any, Any]] = []


_thread = _ThreadState()
# The replicator the hooks report to. Module-level because moto's classes (and so the hooks) are global
# to the process; the twin daemon activates exactly one. ``None``: writes are not captured.
_active: DynamoReplicator | None = None


def _key_id(hash_key: Any, range_key: Any) -> KeyId:
    return (
        (hash_key.type, hash_key.cast_value),
        None if range_key is None else (range_key.type, range_key.cast_value),
    )


def _image(item: Any) -> dict[str, Any]:
    """A private copy of a moto ``Item``'s attributes (``DynamoType`` values, so binary stays bytes)."""
    return {name: copy.deepcopy(value) for name, value in item.attrs.items()}


def replica_regions(table: Table) -> tuple[str, ...]:
    """The regions of ``table``'s replication group (empty when it is a plain regional table)."""
    return tuple(getattr(table, REPLICAS_ATTR, ()))


def _replicated(table: Table) -> bool:
    return len(replica_regions(table)) > 1


class DynamoReplicator:
    """Replays item writes between the replicas of global tables, ``lag_seconds`` (emulated) after they happen.

    Writes are stamped with ``clock`` (the twin's clock), and :meth:`tick` is driven with the same clock.
    """

    def __init__(self, lag_seconds: float = 0.5, clock: Clock | None = None, holds: RegionHolds | None = None) -> None:
        if lag_seconds < 0:
            raise ValueError("lag_seconds must be >= 0")
        self.lag_seconds = lag_seconds
        self.holds = holds if holds is not None else RegionHolds()  # an outage's or a partition's border
        self._clock: Clock = clock if clock is not None else TwinClock()
        self._queue: deque[Change] = deque()
        # Newest write applied or made per (account, region, table, key): (timestamp, region) decides LWW.
        self._versions: dict[tuple[str, str, str, KeyId], tuple[float, str]] = {}
        self._tables: set[str] = set()
        self._paused = False
        # Observed lag (emulated s) of changes applied since the last drain, max per (account, source, table, target).
        self._observed: dict[tuple[str, str, str, str], float] = {}
        # Reentrant: held around every moto write to a replicated table and around tick, so a replicated
        # change can never interleave with a local write (or a transaction's copy-and-restore) of that table.
        self.lock = moto_ext.DYNAMODB_WRITES  # the emulator's write lock: one lock, no order to get wrong

    # ------------------------------------------------------------------ control
    def pause(self) -> None:
        """Stop applying changes (they keep being recorded), e.g. to simulate a replication stall."""
        with self.lock:
            self._paused = True

    def resume(self) -> None:
        with self.lock:
            self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def clear(self) -> None:
        """Forget pending changes and versions (after the emulator's state was reset)."""
        with self.lock:
            self._queue.clear()
            self._versions.clear()
            self._tables.clear()

    # ------------------------------------------------------------------ monitoring
    def pending(self, table: str | None = None) -> int:
        """Changes recorded but not yet applied (for one table, or all)."""
        with self.lock:
            return sum(1 for change in self._queue if table is None or change.table == table)

    def lag(self, table: str, now: float | None = None) -> float:
        """Age in emulated seconds of the oldest change to ``table`` not yet applied (0.0 when caught up)."""
        return self.lags(now).get(table, 0.0)

    def lags(self, now: float | None = None) -> dict[str, float]:
        """:meth:`lag` for every replicated table written so far."""
        at = self._clock.now() if now is None else now
        with self.lock:
            result = dict.fromkeys(self._tables, 0.0)
            for change in self._queue:
                result[change.table] = max(result[change.table], at - change.timestamp)
        return result

    def drain_latencies(self) -> dict[tuple[str, str, str, str], float]:
        """The slowest change applied per (account, source region, table, receiving region) since the last
        call, in emulated seconds; a pair that replicated nothing is absent (AWS publishes no datapoint)."""
        with self.lock:
            observed, self._observed = self._observed, {}
        return observed

    # ------------------------------------------------------------------ recording (called by the hooks)
    def record(self, writes: Iterable[_Write]) -> None:
        with self.lock:
            now = self._clock.now()
            for write in writes:
                key = _key_id(write.hash_key, write.range_key)
                self._versions[(write.account_id, write.region, write.table, key)] = (now, write.region)
                self._tables.add(write.table)
                for target in write.regions:
                    if target != write.region:
                        self._queue.append(
                            Change(
                                now,
                                write.account_id,
                                write.region,
                                target,
                                write.table,
                                write.hash_key,
                                write.range_key,
                                write.image,
                            )
                        )

    # ------------------------------------------------------------------ applying
    def tick(self, now: float) -> None:
        """Apply every change at least ``lag_seconds`` old, oldest first (nothing while paused); a change the
        holds keep back (its source or target region held, or a released backlog's pace) waits in place."""
        with self.lock:
            if self._paused:
                return
            if self.holds.quiet:
                while self._queue and self._queue[0].timestamp + self.lag_seconds <= now:
                    self._replay(self._queue.popleft(), now)
                return
            kept: deque[Change] = deque()
            while self._queue:
                change = self._queue.popleft()
                if change.timestamp + self.lag_seconds > now:
                    self._queue.appendleft(change)  # this one and every later one are too young
                    break
                if self.holds.passes((change.source_region, change.target_region), now):
                    self._replay(change, now)
                else:
                    kept.append(change)
            kept.extend(self._queue)
            self._queue = kept
            self.holds.settle({r for c in kept for r in (c.source_region, c.target_region)})

    def _replay(self, change: Change, now: float) -> None:
        try:
            self._apply(change)
            key = (change.account_id, change.source_region, change.table, change.target_region)
            self._observed[key] = max(self._observed.get(key, 0.0), now - change.timestamp)
        except Exception:
            log.exception("could not replicate %s to %s", change.table, change.target_region)

    def _apply(self, change: Change) -> None:
        table = dynamodb_backends[change.account_id][change.target_region].tables.get(change.table)
        if table is None:
            return  # the replica was deleted meanwhile
        version_key = (change.account_id, change.target_region, change.table, change.key_id)
        incoming = (change.timestamp, change.source_region)
        current = self._versions.get(version_key)
        if current is not None and current >= incoming:
            return  # a newer write already won in the target region: last writer wins
        _thread.replaying = True
        try:
            if change.image is None:
                table.delete_item(change.hash_key, change.range_key)
            else:
                table.put_item(copy.deepcopy(change.image), overwrite=True)
        finally:
            _thread.replaying = False
        self._versions[version_key] = incoming


class LatencyPublisher(MinutePublisher):
    """``AWS/DynamoDB ReplicationLatency`` (Milliseconds; TableName, ReceivingRegion) in the source region,
    from the lag the replicator observed applying changes - so a stalled replica stops getting datapoints,
    as in AWS. Nothing is published for a source region that is down."""

    def __init__(self, replicator: DynamoReplicator, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replicator = replicator

    def publish(self, now: float) -> None:  # noqa: ARG002 - the cadence is the twin clock's, the stamp the wall's
        stamp = self._stamp()
        per_region: dict[str, list[dict[str, Any]]] = {}
        for (_, source, table, target), lag in sorted(self._replicator.drain_latencies().items()):
            per_region.setdefault(source, []).append({
                "MetricName": "ReplicationLatency", "Unit": "Milliseconds", "Timestamp": stamp,
                "Value": round(self._real_seconds(lag) * 1000, 3),
                "Dimensions": [{"Name": "TableName", "Value": table}, {"Name": "ReceivingRegion", "Value": target}],
            })  # fmt: skip
        self._send("AWS/DynamoDB", per_region)


def set_active(replicator: DynamoReplicator | None) -> None:
    """Make ``replicator`` the one every hooked write reports to (``None``: stop capturing)."""
    global _active
    _active = replicator


def active() -> DynamoReplicator | None:
    return _active


def install(replicator: DynamoReplicator | None = None) -> None:
    """Patch moto (once per process); if ``replicator`` is given, make it the active one."""
    _patch()
    if replicator is not None:
        set_active(replicator)


# ---------------------------------------------------------------------------------------------- hooks


def _capture(table: Table, hash_key: Any, range_key: Any, image: dict[str, Any] | None) -> None:
    replicator = _active
    if replicator is None or _thread.replaying or not _replicated(table):
        return
    write = _Write(table.account_id, table.region_name, table.name, replica_regions(table), hash_key, range_key, image)
    if _thread.transaction is not None:
        _thread.transaction.append(write)
    else:
        replicator.record([write])


def _wrap_table_put_item(original: Callable[..., Any]) -> Callable[..., Any]:
    def put_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        replicator = _active
        if replicator is None or not _replicated(self):
            return original(self, *args, **kwargs)
        with replicator.lock:
            item = original(self, *args, **kwargs)
            if _thread.update_depth:
                _thread.update_touched.append((self, item.hash_key, item.range_key))
            else:
                _capture(self, item.hash_key, item.range_key, _image(item))
            return item

    return put_item


def _wrap_table_delete_item(original: Callable[..., Any]) -> Callable[..., Any]:
    def delete_item(self: Table, *args: Any, **kwargs: Any) -> Any:
        replicator = _active
        if replicator is None or not _replicated(self):
            return original(self, *args, **kwargs)
        with replicator.lock:
            item = original(self, *args, **kwargs)
            if item is not None:  # deleting a missing item writes nothing (and streams nothing) in AWS
                _capture(self, item.hash_key, item.range_key, None)
            return item

    return delete_item


def _wrap_backend_update_item(original: Callable[..., Any]) -> Callable[..., Any]:
    def update_item(self: DynamoDBBackend, table_name: str, *args: Any, **kwargs: Any) -> Any:
        replicator = _active
        try:
            table = self.get_table(table_name)
        except Exception:
            table = None
        if replicator is None or table is None or not _replicated(table):
            return original(self, table_name, *args, **kwargs)
        with replicator.lock:
            mark = len(_thread.update_touched)
            _thread.update_depth += 1
            item = None
            try:
                item = original(self, table_name, *args, **kwargs)
            finally:
                _thread.update_depth -= 1
                touched = _thread.update_touched[mark:]
                del _thread.update_touched[mark:]
                if item is not None:
                    touched.append((table, item.hash_key, item.range_key))
                # Record the final state of every key this update touched (normally just one; also the
                # key-only item moto leaves behind when an update of a new item fails half way).
                seen: set[KeyId] = set()
                for touched_table, hash_key, range_key in touched:
                    if _key_id(hash_key, range_key) in seen:
                        continue
                    seen.add(_key_id(hash_key, range_key))
                    current = touched_table.get_item(hash_key, range_key)
                    _capture(touched_table, hash_key, range_key, None if current is None else _image(current))
            return item

    return update_item


def _wrap_transact_write_items(original: Callable[..., Any]) -> Callable[..., Any]:
    def transact_write_items(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        replicator = _active
        if replicator is None or _thread.transaction is not None:
            return original(self, *args, **kwargs)
        with replicator.lock:
            _thread.transaction = []
            try:
                result = original(self, *args, **kwargs)
                writes = _thread.transaction
            finally:
                _thread.transaction = None
            replicator.record(writes)  # committed: stamped together, as one transaction
            return result

    return transact_write_items


def _wrap_table_describe(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def describe(self: Table, base_key: str = "TableDescription") -> dict[str, Any]:
        result = original(self, base_key)
        regions = replica_regions(self)
        if len(regions) > 1:
            result[base_key]["GlobalTableVersion"] = GLOBAL_TABLE_VERSION
            result[base_key]["Replicas"] = [
                {"RegionName": region, "ReplicaStatus": "ACTIVE"} for region in regions if region != self.region_name
            ]
        return result

    return describe


def _wrap_backend_delete_table(original: Callable[..., Table]) -> Callable[..., Table]:
    def delete_table(self: DynamoDBBackend, name: str) -> Table:
        table = original(self, name)
        regions = replica_regions(table)
        if len(regions) > 1:  # deleting a replica's table removes that replica from the group
            _set_group(table.account_id, table.name, tuple(r for r in regions if r != table.region_name))
            setattr(table, REPLICAS_ATTR, ())
        return table

    return delete_table


def _wrap_handler_update_table(original: Callable[[DynamoHandler], Any]) -> Callable[[DynamoHandler], Any]:
    def update_table(self: DynamoHandler) -> Any:
        updates = self.body.get("ReplicaUpdates")
        if updates:
            table = self.dynamodb_backend.get_table(self.body["TableName"])
            for update in updates:
                if "Create" in update:
                    create_replica(table, update["Create"]["RegionName"])
                elif "Delete" in update:
                    delete_replica(table, update["Delete"]["RegionName"])
                # "Update" (per-replica throughput/class overrides) has nothing to emulate.
        return original(self)

    return update_table


@functools.cache
def _patch() -> None:
    moto_ext.apply()
    patches: list[tuple[type, str, Callable[[Any], Any]]] = [
        (Table, "put_item", _wrap_table_put_item),
        (Table, "delete_item", _wrap_table_delete_item),
        (Table, "describe", _wrap_table_describe),
        (DynamoDBBackend, "update_item", _wrap_backend_update_item),
        (DynamoDBBackend, "transact_write_items", _wrap_transact_write_items),
        (DynamoDBBackend, "delete_table", _wrap_backend_delete_table),
        (DynamoHandler, "update_table", _wrap_handler_update_table),
    ]
    for cls, name, wrap in patches:
        setattr(cls, name, wrap(getattr(cls, name)))


# ---------------------------------------------------------------------------------------------- replicas


def _set_group(account_id: str, table_name: str, regions: tuple[str, ...]) -> None:
    group = tuple(sorted(set(regions)))
    for region in group:
        member = dynamodb_backends[account_id][region].tables.get(table_name)
        if member is not None:
            setattr(member, REPLICAS_ATTR, group if len(group) > 1 else ())


def _same_keys(a: Table, b: Table) -> bool:
    return (a.hash_key_attr, a.hash_key_type, a.range_key_attr, a.range_key_type) == (
        b.hash_key_attr,
        b.hash_key_type,
        b.range_key_attr,
        b.range_key_type,
    )


def create_replica(table: Table, region: str) -> Table:
    """Add a replica of ``table`` in ``region``: create it like the source (or adopt an empty twin), backfill."""
    if region == table.region_name:
        raise MockValidationException(f"Cannot add a replica of table {table.name} in its own region {region}")
    if region in replica_regions(table):
        raise MockValidationException(
            f"Failed to create a the new replica of table with name: '{table.name}' because one or more "
            "replicas already existed as tables."
        )
    backend = dynamodb_backends[table.account_id][region]
    replica = backend.tables.get(table.name)
    if replica is not None and (len(replica) or not _same_keys(replica, table) or replica_regions(replica)):
        raise MockValidationException(
            f"Failed to create a the new replica of table with name: '{table.name}' because one or more "
            "replicas already existed as tables."
        )
    if replica is None:
        stream = table.stream_specification if table.stream_specification else {}
        replica = backend.create_table(
            table.name,
            schema=copy.deepcopy(table.schema),
            throughput=None if table.billing_mode == "PAY_PER_REQUEST" else copy.deepcopy(table.throughput),
            attr=copy.deepcopy(table.attr),
            global_indexes=[copy.deepcopy(index.describe()) for index in table.global_indexes] or None,
            indexes=[copy.deepcopy(index.describe()) for index in table.indexes] or None,
            streams=copy.deepcopy(stream) if stream.get("StreamEnabled") else None,
            billing_mode=table.billing_mode or "PROVISIONED",
            sse_specification=copy.deepcopy(table.sse_specification),
            tags=[],
            deletion_protection_enabled=False,
            warm_throughput=None,
        )
    replicator = _active
    with replicator.lock if replicator is not None else contextlib.nullcontext():
        _set_group(table.account_id, table.name, (*replica_regions(table), table.region_name, region))
        _thread.replaying = True  # the backfill is the replica's initial copy, not a write to replicate
        try:
            for item in table.all_items():
                replica.put_item(_image(item), overwrite=True)
        finally:
            _thread.replaying = False
    return replica


def delete_replica(table: Table, region: str) -> None:
    """Remove the replica in ``region`` from the group and delete its table, as DeleteTableReplica does."""
    regions = replica_regions(table)
    if region not in regions or region == table.region_name:
        raise MockValidationException(f"Replica {region} of table {table.name} does not exist or cannot be deleted")
    dynamodb_backends[table.account_id][region].delete_table(table.name)

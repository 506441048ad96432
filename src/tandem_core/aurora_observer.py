"""The Aurora observer: what this region's ledger cluster says about replication into it, and its heartbeat row.

The replication monitor runs outside the VPC; its in-VPC observer function (replication_monitor.aurora_app)
makes the observation with :class:`LedgerAurora` and the monitor reads it back through :class:`InvokedAurora`.
The heartbeat row is a ``replication_heartbeat`` row (migration 0002) upserted on the writer and read from the
secondary cluster, both times on the database clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import pg8000.native
from botocore.exceptions import ClientError

from tandem_core.database import CONNECTION_ERRORS, LedgerConnector, credentials_for, sqlstate
from tandem_core.settings import AwsSettings, LedgerDbSettings


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


def holds_writer(conn: pg8000.native.Connection, region: str) -> bool:
    """Whether the cluster behind ``conn`` (its reader endpoint, which answers in every region) holds the global
    database's writer: the endpoint reached the writer instance itself (not in recovery: a cluster without
    replicas), or ``aurora_global_db_status()`` marks this region as the primary (-1). Asked of the database,
    never of a deployment parameter, so it stays right after a failover."""
    rows = conn.run("SELECT pg_is_in_recovery()") or [[None]]
    if rows[0][0] is False:
        return True
    try:
        status = conn.run(_STATUS, region=region) or []
    except pg8000.native.DatabaseError as exc:
        if sqlstate(exc) != _UNDEFINED_FUNCTION:
            raise
        return False
    return bool(status) and status[0][0] is not None and int(status[0][0]) == -1


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
    writer = LedgerConnector(db, credentials_for(db, aws))
    if not db.reader_host or db.reader_host == db.host:
        return LedgerAurora(writer, aws.region)
    reader_db = db.model_copy(update={"host": db.reader_host})  # an IAM token names the endpoint it is for
    return LedgerAurora(LedgerConnector(reader_db, credentials_for(reader_db, aws)), aws.region, writer=writer)


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

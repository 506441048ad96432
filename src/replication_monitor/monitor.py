"""One run of the replication monitor: measure every store, probe the peer, judge, record, publish.

A run (every minute) is one measurement pass followed by a probe loop:

- once per run: ONE GetMetricData (this region's CloudWatch), the Aurora observation, the S3 heartbeat
  (PUT ours, HEAD the peer's copy), the queue check;
- every probe round (``PROBE_COUNT`` rounds, ``PROBE_INTERVAL_SECONDS`` apart): GET the peer's /health and
  read the peer's DynamoDB heartbeat from our replica, and publish both as high-resolution metrics, with the
  peer's word on its ledger when its heartbeat carries one and is not stale (``PeerLedgerFailingSeconds``: for how
  long, by its own observations, its ledger has not committed; 0 while it does); every second
  round, counted back from the last one, write our own heartbeat (the last write also carries the readiness
  record, in one BatchWriteItem). In the active region each heartbeat says whether the ledger commits: the
  Aurora observer is asked every round, and while the ledger fails the heartbeat goes every round too, so a
  database that dies under a region whose ingress still answers (a grey failure) is seen within one round and
  reaches the peer, seen twice, one round later. The
  heartbeat says how often it is written (2 x the interval), so the peer can tell when one is overdue:
  DynamoDB's ReplicationLatency simply stops during a stall, and two missing heartbeats while the peer
  answers its probe make the lag at least their age (see :meth:`StoreReading.at_least_overdue`) - a stall
  shows as a rising lag within ~40 s, not only as unknown.

The first round reads the control record (is this region the active one?) with the peer's heartbeat; the
last round reads our own last readiness record (it carries the last lag measured per store into this
run: see :meth:`StoreReading.remembering`) and the control record together with the peer's heartbeat (one
BatchGetItem). In a region that is not the active one the run then keeps the fence (:class:`FenceKeeper`):
one ListEventSourceMappings, and only when needed, switching its processor off (the handler could not reach
it during the failover) and forwarding what its queue holds to the active region once that region answers.

AWS calls per run: 5 + PROBE_COUNT reads + ceil(PROBE_COUNT / 2) writes = 14 at the default 6 rounds, 7 for
a single pass (PROBE_COUNT=1), + 1 in a region that is not active, + PROBE_COUNT - 1 observer invocations
(5 at 6 rounds) in the active one, and while its ledger fails a heartbeat every round (+3). Nothing here
fails over; the only thing it changes beyond our heartbeats, readiness record and metrics is the fence of its
own region.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from replication_monitor.armed import failover_armed
from tandem_core.aurora_observer import AuroraObservation, AuroraSource
from tandem_core.control import ControlRecord, State, primary_region
from tandem_core.fencing import ProcessingSwitch
from tandem_core.forwarding import DlqRedrive, QueueForwarder
from tandem_core.heartbeat import (
    Beat,
    BucketHeartbeats,
    ControlItems,
    LastRound,
    LedgerVerdict,
    PeerHeartbeat,
    ledger_verdict,
    to_attributes,
)
from tandem_core.readiness import (
    OK,
    Dependency,
    Thresholds,
    Verdict,
    assess,
    readiness_key,
    readiness_record,
)
from tandem_core.replication import (
    AURORA_IN,
    STORES,
    HeartbeatState,
    MetricReading,
    OutboundLag,
    Store,
    StoreReading,
    age,
    carried_lag,
    fetch_metrics,
    heartbeat_state,
    replication_metrics,
)
from tandem_core.settings import MonitorSettings

#: Time a last round needs after its probe (heartbeat + readiness write, the response), in seconds.
FINAL_ROUND_RESERVE = 5.0


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    status: int | None = None
    error: str | None = None


class Prober(Protocol):
    def probe(self, url: str, timeout: float) -> ProbeResult: ...


class MetricsSink(Protocol):
    def probe_round(
        self,
        at: float,
        peer_healthy: bool | None,
        peer_heartbeat_age: float | None,
        peer_ledger_failing_seconds: float | None,
    ) -> None: ...

    def run(self, at: float, lags: Mapping[Store, float | None], ready: bool, armed: bool) -> None: ...


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def problem(exc: BaseException) -> str:
    """A short name for what went wrong with an AWS call (the error code, or the exception type)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


_AWS_ERRORS = (ClientError, BotoCoreError)


@dataclass
class _Run:
    """What one run has seen so far (dependency problems keep the first error)."""

    dependencies: dict[Dependency, str]

    def failed(self, dep: Dependency, what: str) -> None:
        if self.dependencies.get(dep, OK) == OK:
            self.dependencies[dep] = what


@dataclass(frozen=True)
class FenceKeeper:
    """This region's processing switch and queue forwarder (see :mod:`tandem_core.fencing`)."""

    switch: ProcessingSwitch
    forwarder: QueueForwarder | None  # None: no peer queue configured, nothing to forward to
    forward_limit: int = 500
    #: the active region's side: ask the failover handler to ``reconcile`` or ``resume`` (None: not configured)
    ask_handler: Callable[[str], None] | None = None
    #: this region's DLQ, redriven to the active region's queue while this region is not active
    dead_letters: DlqRedrive | None = None

    def keep(
        self, control: ControlRecord, region: str, *, queued: int, peer_answered: bool, budget: float,
        now: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """In the active region: an execution for it that is stuck (a step failed, or its invocation died: the
        lease lapsed) is resumed, and a reconciliation owed is asked for. Elsewhere: processing off, and the
        queue forwarded and the DLQ redriven (what a fence or an outage pushed there is no poison) while the
        active region answers. Errors are reported, never raised: the readiness record is already written."""
        report: dict[str, Any] = {"active_region": control.active_region, "epoch": control.epoch}
        if control.active_region == region:
            report["fenced"] = False
            now = time.time() if now is None else now
            stuck = control.state is State.RUNNING and (control.lease_until is None or control.lease_until <= now)
            if stuck and self.ask_handler is not None:
                try:
                    self.ask_handler("resume")  # every run until it completes: nothing waits for a human
                    report["resume"] = f"asked (execution {control.execution_id})"
                except _AWS_ERRORS as exc:
                    report["resume_error"] = problem(exc)
            if control.awaits_reconciliation and self.ask_handler is not None:
                if not peer_answered:  # its queue, DLQ and journal are out of reach until it is back
                    regions = sorted({o.old_region for o in control.owed})
                    report["reconcile"] = f"waits until {', '.join(regions)} answers"
                    return report
                try:
                    self.ask_handler("reconcile")  # asked every run until it completes: it may be waiting
                    report["reconcile"] = "asked"
                except _AWS_ERRORS as exc:
                    report["reconcile_error"] = problem(exc)
            return report
        report["fenced"] = True
        try:
            report["processing"] = self.switch.set(enabled=False) if self.switch.is_on() else "off"
        except (*_AWS_ERRORS, LookupError) as exc:
            report["processing_error"] = problem(exc)
        if not peer_answered:  # forwarding and redriving both need the active region
            if queued and self.forwarder is not None:
                report["forwarding"] = f"{queued} message(s) wait until {control.active_region} answers"
            return report
        if queued and self.forwarder is not None:
            try:
                forwarded = self.forwarder.drain(limit=self.forward_limit, deadline=time.monotonic() + budget)
                report["forwarded"] = forwarded.as_dict()
            except _AWS_ERRORS as exc:
                report["forwarding_error"] = problem(exc)
        if self.dead_letters is not None:
            try:
                redriven = self.dead_letters.run(time.monotonic() + budget)
                if redriven.redriven or redriven.errors:
                    report["dead_letters"] = redriven.as_dict()
            except _AWS_ERRORS as exc:
                report["dead_letters_error"] = problem(exc)
        return report


class ReplicationMonitor:
    """The monitor's logic; every AWS resource comes in already built (see ``replication_monitor.app``)."""

    def __init__(
        self,
        settings: MonitorSettings,
        region: str,
        *,
        cloudwatch: Any,
        sqs: Any,
        control: ControlItems,
        bucket: BucketHeartbeats,
        aurora: AuroraSource,
        prober: Prober,
        fence: FenceKeeper | None = None,
        events: Any | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._s = settings
        self._region = region
        self._cloudwatch = cloudwatch
        self._sqs = sqs
        self._control = control
        self._bucket = bucket
        self._aurora = aurora
        self._prober = prober
        self._fence = fence
        self._events = events  # reads the failover rule's state (replication_monitor.armed)
        self._primary = primary_region(region, settings.region_role, settings.peer_region)
        self._clock = clock
        self._sleep = sleep
        self._specs = replication_metrics(
            table=settings.ledger_table,
            peer_region=settings.peer_region,
            bucket=settings.archive_bucket,
            peer_bucket=settings.peer_archive_bucket,
            rule_id=settings.archive_replication_rule,
            cluster_id=settings.ledger_db_cluster_id,
        )
        self.thresholds = Thresholds(
            settings.rpo_budget_seconds, settings.lag_warning_seconds, settings.heartbeat_stale_seconds
        )

    # ------------------------------------------------------------------------------------------ the run
    def run(self, sink: MetricsSink, remaining_ms: Callable[[], int] | None = None) -> dict[str, Any]:
        """Measure, probe, judge; write our heartbeats and readiness record; return what a caller prints."""
        s = self._s
        started = self._clock()
        run = _Run(dict.fromkeys(Dependency, OK))
        readings = self._read_metrics(started, run)
        outbound = OutboundLag.from_metrics(readings)
        aurora, observed_at = self._observe(run), started
        queued = self._check_queue(run)
        self._write_bucket_heartbeat(started, run)
        found: LastRound | None = None

        probes: list[dict[str, Any]] = []
        record: dict[str, Any] = {}
        active = False  # this region is the active one: its heartbeats say whether its ledger commits
        verdict: LedgerVerdict | None = None  # the last one given (a failure streak continues from it)
        for i in range(s.probe_count):
            if i:
                self._wait_until(started + i * s.probe_interval_seconds)
            at = self._clock()
            probe = self._prober.probe(s.peer_health_url, s.probe_timeout_seconds) if s.peer_health_url else None
            last = i == s.probe_count - 1 or not self._room_for_another_round(remaining_ms)
            peer_hb, readable, found = self._read_peer_heartbeat(run, last=last, first=i == 0)
            if found is not None:
                active = _ledger_is_ours(found, self._region)
                if i == 0:  # a failure streak goes on across runs: the last verdict rides in our readiness record
                    verdict = LedgerVerdict.from_dict((found.previous_readiness or {}).get("ledger"))
            if active and at - observed_at >= 0.9 * s.probe_interval_seconds:
                aurora, observed_at = self._observe(run), at  # every round: a dead ledger is seen within one
            verdict = ledger_verdict(aurora, observed_at, verdict, 3 * s.probe_interval_seconds) if active else None
            # the heartbeat goes every second round - every round while the ledger fails, so the failure's
            # second observation, one round after the first, reaches the peer at once
            writes = last or (s.probe_count - 1 - i) % 2 == 0 or (verdict is not None and not verdict.ok)
            hb_age = None if peer_hb is None else age(at, peer_hb.written_at)
            stale = s.heartbeat_stale_seconds
            peer_ledger = None if peer_hb is None else peer_hb.ledger_failing(at, stale)
            peer_failing_for = None if peer_hb is None else peer_hb.ledger_failing_seconds(at, stale)
            probes.append(
                {
                    "at": iso(at),
                    "healthy": None if probe is None else probe.healthy,
                    "status": None if probe is None else probe.status,
                    "error": None if probe is None else probe.error,
                    "heartbeat_age_seconds": None if hb_age is None else round(hb_age, 3),
                    "ledger_failing": peer_ledger,
                    "ledger_failing_seconds": peer_failing_for,
                }
            )
            sink.probe_round(at, None if probe is None else probe.healthy, hb_age, peer_failing_for)
            if last:  # judged on the freshest peer heartbeats: the ones this round reads
                peer = self._peer_summary(probes)
                s3_beat, s3_readable = self._read_bucket_heartbeat(run)
                stores = self._stores(
                    at, aurora, readings.get(AURORA_IN, MetricReading()), (peer_hb, readable), (s3_beat, s3_readable),
                    peer_alive=bool(peer["answered"]),
                    previous=None if found is None else found.previous_readiness,
                )  # fmt: skip
                record = self._finish(run, at, started, outbound, stores, aurora, peer, verdict)
                break
            if writes:
                self._write(run, at, outbound, ledger=verdict)

        lags = {st: record["lag_seconds"][st.value] for st in STORES}
        armed, why_not = failover_armed(s.peer_health_url, aurora, self._events, s.failover_rule_name)
        sink.run(started, lags, record["verdict"] == Verdict.READY.value, armed)
        report = {**record, "peer_region": s.peer_region, "peer": {**record["peer"], "probes": probes}}
        report["failover_armed"] = {"armed": armed, "reasons": why_not}
        control = None if found is None else found.control
        if self._fence is not None and control is not None:
            budget = (remaining_ms() / 1000 - FINAL_ROUND_RESERVE) if remaining_ms is not None else 30.0
            answered = bool(record["peer"]["answered"]) or not s.peer_health_url
            report["fence"] = self._fence.keep(
                control, self._region, queued=queued, peer_answered=answered, budget=max(budget, 1.0), now=self._clock()
            )
        return report

    def _finish(
        self,
        run: _Run,
        at: float,
        started: float,
        outbound: OutboundLag,
        stores: Mapping[Store, StoreReading],
        aurora: AuroraObservation,
        peer: Mapping[str, Any],
        ledger: LedgerVerdict | None,
    ) -> dict[str, Any]:
        """Judge, then write our last heartbeat together with the readiness record (one call)."""
        record = self._record(run, started, stores, aurora, peer, ledger)
        item = {**readiness_key(self._region), **to_attributes(record)}
        if self._write(run, at, outbound, extra=item, ledger=ledger) is False:
            record = self._record(run, started, stores, aurora, peer, ledger)  # the table failed: say so
        return record

    def _record(
        self,
        run: _Run,
        started: float,
        stores: Mapping[Store, StoreReading],
        aurora: AuroraObservation,
        peer: Mapping[str, Any],
        ledger: LedgerVerdict | None = None,
    ) -> dict[str, Any]:
        """The readiness record; ``ledger``: this region's last verdict on its own ledger (the next run goes on
        with its failure streak)."""
        assessment = assess(
            run.dependencies, stores, peer["answered"], self.thresholds, peer_ledger_lost=peer["ledger_failing"] is True
        )
        record = readiness_record(
            region=self._region,
            role=self._s.region_role,
            assessment=assessment,
            stores=stores,
            dependencies=run.dependencies,
            aurora_writer=aurora.writer if aurora.reachable else None,
            peer=peer,
            measured_at=started,
            measured_at_iso=iso(started),
            thresholds=self.thresholds,
        )
        return {**record, "ledger": None if ledger is None else ledger.as_dict()}

    def _peer_summary(self, probes: list[dict[str, Any]]) -> dict[str, Any]:
        results = [p["healthy"] for p in probes if p["healthy"] is not None]
        return {
            "region": self._s.peer_region,
            "probed": bool(self._s.peer_health_url),
            "healthy": results[-1] if results else None,  # the latest probe
            "answered": any(results) if results else None,  # any probe of this run
            "probes_healthy": sum(1 for r in results if r),
            "probes_failed": sum(1 for r in results if not r),
            "heartbeat_age_seconds": probes[-1]["heartbeat_age_seconds"] if probes else None,
            # the peer's own word, with its latest heartbeat: its ledger cannot commit (None: no fresh verdict)
            "ledger_failing": probes[-1]["ledger_failing"] if probes else None,
        }

    # ------------------------------------------------------------------------------------------ measurements
    def _read_metrics(self, now: float, run: _Run) -> dict[str, MetricReading]:
        try:
            return fetch_metrics(
                self._cloudwatch,
                self._specs,
                datetime.fromtimestamp(now, UTC),
                self._s.metric_window_seconds,
                self._s.metric_period_seconds,
            )
        except _AWS_ERRORS as exc:
            run.failed(Dependency.METRICS, problem(exc))
            return {}

    def _check_queue(self, run: _Run) -> int:
        """The queue answers; returns how many messages it holds (visible ones; 0 when it does not answer)."""
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self._s.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            ).get("Attributes", {})
        except _AWS_ERRORS as exc:
            run.failed(Dependency.QUEUE, problem(exc))
            return 0
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def _write_bucket_heartbeat(self, now: float, run: _Run) -> None:
        try:
            self._bucket.write(now, self._s.run_seconds)  # once a run, at its start
        except _AWS_ERRORS as exc:
            run.failed(Dependency.BUCKET, problem(exc))

    def _read_bucket_heartbeat(self, run: _Run) -> tuple[Beat | None, bool]:
        try:
            return self._bucket.read_peer(), True
        except _AWS_ERRORS as exc:
            run.failed(Dependency.BUCKET, problem(exc))
            return None, False

    def _read_peer_heartbeat(
        self, run: _Run, *, last: bool, first: bool = False
    ) -> tuple[PeerHeartbeat | None, bool, LastRound | None]:
        """The peer's heartbeat; in the first and the last round also our previous record and the control record
        (the first round learns whether this region is the active one; the last one keeps the fence by it)."""
        try:
            if last or first:
                found = self._control.read_last_round(self._primary, settle=last)
                return found.peer_heartbeat, True, found
            return self._control.read_peer_heartbeat(), True, None
        except (*_AWS_ERRORS, RuntimeError) as exc:
            run.failed(Dependency.TABLE, problem(exc))
            return None, False, None

    def _observe(self, run: _Run) -> AuroraObservation:
        observation = self._aurora.observe()
        if not observation.reachable:
            run.failed(Dependency.DATABASE, observation.error or "unreachable")
        return observation

    def _write(
        self,
        run: _Run,
        at: float,
        outbound: OutboundLag,
        extra: dict[str, Any] | None = None,
        ledger: LedgerVerdict | None = None,
    ) -> bool:
        every = None if self._s.run_seconds is None else 2 * self._s.probe_interval_seconds
        try:
            self._control.write_heartbeat(at, outbound, () if extra is None else (extra,), every, ledger)
        except (*_AWS_ERRORS, RuntimeError) as exc:
            run.failed(Dependency.TABLE, problem(exc))
            return False
        return True

    def _stores(
        self,
        now: float,
        aurora: AuroraObservation,
        aurora_metric: MetricReading,
        table: tuple[PeerHeartbeat | None, bool],
        bucket: tuple[Beat | None, bool],
        *,
        peer_alive: bool,
        previous: Mapping[str, Any] | None = None,
    ) -> dict[Store, StoreReading]:
        """Each store's reading; ``table``/``bucket``: the peer's heartbeat there and whether the read worked.

        While the peer answers its probe, an overdue heartbeat is replication delay and raises the lag to it.
        Each reading remembers the last lag measured, carried from ``previous`` (our last readiness record).
        """
        stale = self._s.heartbeat_stale_seconds
        (peer_hb, readable), (s3_beat, s3_readable) = table, bucket
        hb_age = None if peer_hb is None else age(now, peer_hb.written_at)
        hb_state = heartbeat_state(hb_age, stale) if readable else HeartbeatState.UNREADABLE
        s3_age = None if s3_beat is None else age(now, s3_beat.written_at)
        s3_state = heartbeat_state(s3_age, stale) if s3_readable else HeartbeatState.UNREADABLE
        outbound = peer_hb.outbound if peer_hb is not None else OutboundLag()
        dynamodb = carried_lag(
            Store.DYNAMODB, outbound.dynamodb, hb_age, stale, hb_state, hb_age, carrier_readable=readable
        )
        s3 = carried_lag(Store.S3, outbound.s3, hb_age, stale, s3_state, s3_age, carrier_readable=readable)
        if peer_alive:
            dynamodb = dynamodb.at_least_overdue(None if peer_hb is None else peer_hb.every_seconds)
            s3 = s3.at_least_overdue(None if s3_beat is None else s3_beat.every_seconds)
        aurora_in = aurora_reading(aurora, aurora_metric, now, stale)
        readings = {Store.AURORA: aurora_in, Store.DYNAMODB: dynamodb, Store.S3: s3}
        carried = (previous or {}).get("stores")
        carried = carried if isinstance(carried, Mapping) else {}
        return {store: r.remembering(carried.get(store.value), now) for store, r in readings.items()}

    # ------------------------------------------------------------------------------------------ pacing
    def _wait_until(self, target: float) -> None:
        delay = target - self._clock()
        if delay > 0:
            self._sleep(delay)

    def _room_for_another_round(self, remaining_ms: Callable[[], int] | None) -> bool:
        if remaining_ms is None:
            return True
        needed = self._s.probe_interval_seconds + self._s.probe_timeout_seconds + FINAL_ROUND_RESERVE
        return remaining_ms() / 1000 > needed


def _ledger_is_ours(found: LastRound, region: str) -> bool:
    """This region is the active one and no execution is moving it: its ledger must commit."""
    control = found.control
    return control is not None and control.active_region == region and control.state is not State.RUNNING


def aurora_reading(obs: AuroraObservation, metric: MetricReading, now: float, stale_after: float) -> StoreReading:
    """Aurora's lag into this region: our own row of aurora_global_db_status(), else AuroraGlobalDBRPOLag.

    The writer's lag is 0 by definition (nothing replicates into it) and it has no heartbeat to read. A status
    row whose last calculation is older than the staleness threshold is a measurement that stopped.
    """
    if obs.reachable and obs.writer:
        return StoreReading(Store.AURORA, 0.0, "writer", now, HeartbeatState.NOT_APPLICABLE, None)
    if not obs.reachable:
        hb_state, hb_age = HeartbeatState.UNREADABLE, None
    else:
        hb_age = obs.heartbeat_age_seconds
        hb_state = heartbeat_state(hb_age, stale_after)
    last_known = None
    if obs.reachable and obs.rpo_lag_seconds is not None:
        calc_age = obs.status_age_seconds or 0.0
        if calc_age <= stale_after:
            return StoreReading(
                Store.AURORA, obs.rpo_lag_seconds, "aurora_global_db_status", now - calc_age, hb_state, hb_age
            )
        last_known = obs.rpo_lag_seconds
    if metric.known:
        return StoreReading(
            Store.AURORA, metric.value, "cloudwatch AuroraGlobalDBRPOLag", metric.as_of, hb_state, hb_age,
            last_known_lag_seconds=last_known,
        )  # fmt: skip
    why = "status calculation too old" if last_known is not None else (obs.status_error or obs.error or "no signal")
    return StoreReading(Store.AURORA, None, why, None, hb_state, hb_age, last_known_lag_seconds=last_known)

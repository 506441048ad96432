"""The readiness verdict, table-driven: every reason is reachable and has the severity the docs give it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tandem_core.readiness import (
    DEPENDENCIES,
    OK,
    Dependency,
    Thresholds,
    Verdict,
    all_reasons,
    assess,
    readiness_key,
    readiness_record,
)
from tandem_core.replication import STORES, HeartbeatState, Store, StoreReading

T = Thresholds(rpo_budget_seconds=5.0, warning_seconds=2.0, heartbeat_stale_seconds=90.0)
ALL_OK = dict.fromkeys(DEPENDENCIES, OK)


def fresh(store: Store, lag: float | None = 0.4) -> StoreReading:
    return StoreReading(store, lag, "test", 1.0, HeartbeatState.FRESH, 10.0)


FRESH = {s: fresh(s) for s in STORES}

# (what is different from "everything fresh and answering", peer answers?, verdict, reasons)
CASES: list[tuple[str, dict[Dependency, str], dict[Store, StoreReading], bool | None, Verdict, tuple[str, ...]]] = [
    ("all fresh", {}, {}, True, Verdict.READY, ()),
    ("all fresh, peer not probed", {}, {}, None, Verdict.READY, ()),
    ("all fresh, peer silent", {}, {}, False, Verdict.READY, ()),
    ("writer aurora", {}, {Store.AURORA: StoreReading(Store.AURORA, 0.0, "writer", 1.0,
                                                      HeartbeatState.NOT_APPLICABLE)}, True, Verdict.READY, ()),
    ("lag exactly at warning", {}, {Store.S3: fresh(Store.S3, 2.0)}, True, Verdict.READY, ()),
    ("lag exactly at budget", {}, {Store.S3: fresh(Store.S3, 5.0)}, True, Verdict.DEGRADED, ("s3_lag_above_warning",)),
]  # fmt: skip
for dep in DEPENDENCIES:
    severity = Verdict.DEGRADED if dep is Dependency.METRICS else Verdict.NOT_READY
    CASES.append((f"{dep} fails", {dep: "AccessDenied"}, {}, True, severity, (f"own_{dep}_unreachable",)))
for s in STORES:
    CASES += [
        (f"{s} above budget", {}, {s: fresh(s, 5.01)}, True, Verdict.NOT_READY, (f"{s}_lag_above_budget",)),
        (f"{s} above warning", {}, {s: fresh(s, 2.5)}, True, Verdict.DEGRADED, (f"{s}_lag_above_warning",)),
        (f"{s} unknown", {}, {s: fresh(s, None)}, True, Verdict.DEGRADED, (f"{s}_lag_unknown",)),
        (f"{s} not measured at all", {}, {s: None}, True, Verdict.DEGRADED, (f"{s}_lag_unknown",)),  # type: ignore[dict-item]
        (f"{s} stalled: stale while the peer answers", {},
         {s: replace(fresh(s), heartbeat=HeartbeatState.STALE, heartbeat_age_seconds=300.0)}, True,
         Verdict.NOT_READY, (f"{s}_heartbeat_stale",)),
        (f"{s} stale while the peer is silent (region loss)", {},
         {s: replace(fresh(s, None), heartbeat=HeartbeatState.STALE)}, False,
         Verdict.DEGRADED, (f"{s}_lag_unknown", f"{s}_heartbeat_stale")),
        (f"{s} stalled, then the peer went silent: its other heartbeats kept arriving", {},
         {s: replace(fresh(s, None), heartbeat=HeartbeatState.STALE, heartbeat_age_seconds=400.0)}, False,
         Verdict.NOT_READY, (f"{s}_lag_unknown", f"{s}_stalled_before_peer_lost")),
        (f"{s} stale with every other heartbeat (region loss: all stopped together)", {},
         {**{o: replace(fresh(o), heartbeat=HeartbeatState.STALE, heartbeat_age_seconds=340.0) for o in STORES},
          s: replace(fresh(s, None), heartbeat=HeartbeatState.STALE, heartbeat_age_seconds=400.0)}, False,
         Verdict.DEGRADED,
         tuple(r for o in STORES for r in ([f"{o}_lag_unknown"] if o is s else []) + [f"{o}_heartbeat_stale"])),
        (f"{s} behind when the peer went silent: the carried last measurement decides", {},
         {s: replace(fresh(s, None), last_measured_lag_seconds=12.0, last_measured_at=0.5)}, False,
         Verdict.NOT_READY, (f"{s}_lag_above_budget_before_peer_lost",)),
        (f"{s} behind when last measured, but the peer answers: only unknown now", {},
         {s: replace(fresh(s, None), last_measured_lag_seconds=12.0, last_measured_at=0.5)}, True,
         Verdict.DEGRADED, (f"{s}_lag_unknown",)),
        (f"{s} within budget when the peer went silent (region loss)", {},
         {s: replace(fresh(s, None), last_measured_lag_seconds=5.0, last_measured_at=0.5)}, False,
         Verdict.DEGRADED, (f"{s}_lag_unknown",)),
        (f"{s} stale, peer not probed", {}, {s: replace(fresh(s), heartbeat=HeartbeatState.STALE)}, None,
         Verdict.DEGRADED, (f"{s}_heartbeat_stale",)),
        (f"{s} heartbeat missing", {}, {s: replace(fresh(s), heartbeat=HeartbeatState.MISSING)}, True,
         Verdict.DEGRADED, (f"{s}_heartbeat_missing",)),
        (f"{s} heartbeat unreadable: the dependency says it", {},
         {s: replace(fresh(s), heartbeat=HeartbeatState.UNREADABLE)}, True, Verdict.READY, ()),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "deps", "stores", "peer", "verdict", "reasons"), CASES, ids=[c[0] for c in CASES])
def test_verdict_and_reasons(
    name: str,
    deps: dict[Dependency, str],
    stores: dict[Store, StoreReading | None],
    peer: bool | None,
    verdict: Verdict,
    reasons: tuple[str, ...],
) -> None:
    readings = {**FRESH, **stores}
    present = {k: v for k, v in readings.items() if v is not None}
    assessment = assess({**ALL_OK, **deps}, present, peer, T)
    assert (assessment.verdict, assessment.reasons) == (verdict, reasons)


def test_every_documented_reason_is_reachable() -> None:
    reached = {r for c in CASES for r in c[5]}
    assert reached == set(all_reasons())


def test_a_reading_remembers_its_own_lag_else_the_one_its_last_record_carried() -> None:
    measured = fresh(Store.AURORA, 7.5).remembering({"last_measured_lag_seconds": 0.1, "last_measured_at": 0.0}, 9.0)
    assert (measured.last_measured_lag_seconds, measured.last_measured_at) == (7.5, 1.0)  # as_of, not "now"
    unknown = fresh(Store.AURORA, None)
    carried = unknown.remembering({"last_measured_lag_seconds": 7.5, "last_measured_at": 1.0}, 9.0)
    assert (carried.last_measured_lag_seconds, carried.last_measured_at) == (7.5, 1.0)
    assert carried.as_dict()["last_measured_lag_seconds"] == 7.5
    for malformed in (
        None,
        "x",
        {},
        {"last_measured_lag_seconds": True, "last_measured_at": 1.0},
        {"last_measured_lag_seconds": "7", "last_measured_at": 1.0},
        {"last_measured_lag_seconds": 7},
    ):
        assert unknown.remembering(malformed, 9.0).last_measured_lag_seconds is None, malformed  # fmt: skip


def test_the_worst_reason_decides_and_reasons_keep_a_fixed_order() -> None:
    stores = {**FRESH, Store.DYNAMODB: fresh(Store.DYNAMODB, None), Store.AURORA: fresh(Store.AURORA, 9.0)}
    a = assess({**ALL_OK, Dependency.METRICS: "Throttling", Dependency.QUEUE: "x"}, stores, True, T)
    assert a.verdict is Verdict.NOT_READY
    assert a.reasons == (
        "own_queue_unreachable", "own_metrics_unreachable", "aurora_lag_above_budget", "dynamodb_lag_unknown",
    )  # fmt: skip


def test_a_dependency_never_checked_counts_as_failed() -> None:
    a = assess({}, FRESH, True, T)
    assert a.verdict is Verdict.NOT_READY
    assert "own_database_unreachable" in a.reasons


def test_thresholds_come_from_the_caller() -> None:
    strict = Thresholds(rpo_budget_seconds=1.0, warning_seconds=0.2, heartbeat_stale_seconds=30.0)
    assert assess(ALL_OK, FRESH, True, strict).reasons == (
        "aurora_lag_above_warning", "dynamodb_lag_above_warning", "s3_lag_above_warning",
    )  # fmt: skip


def test_the_readiness_record_says_everything_a_reader_needs() -> None:
    stores = {**FRESH, Store.S3: fresh(Store.S3, None)}
    assessment = assess(ALL_OK, stores, True, T)
    record = readiness_record(
        region="us-west-2", role="dr", assessment=assessment, stores=stores, dependencies=ALL_OK,
        aurora_writer=False, peer={"region": "us-east-1", "healthy": True}, measured_at=1.25,
        measured_at_iso="1970-01-01T00:00:01.250Z", thresholds=T,
    )  # fmt: skip
    assert record["verdict"] == "degraded"
    assert record["reasons"] == ["s3_lag_unknown"]
    assert record["lag_seconds"] == {"aurora": 0.4, "dynamodb": 0.4, "s3": None}
    assert record["dependencies"] == {d.value: "ok" for d in DEPENDENCIES}
    assert record["stores"]["s3"]["heartbeat"] == "fresh"
    assert record["thresholds"] == {"rpo_budget_seconds": 5.0, "warning_seconds": 2.0, "heartbeat_stale_seconds": 90.0}
    assert readiness_key("us-west-2") == {"pk": {"S": "READINESS#us-west-2"}, "sk": {"S": "READINESS"}}

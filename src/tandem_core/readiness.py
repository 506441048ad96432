"""Could this region take over now? The readiness verdict of a region as failover target, with reasons.

``ready``: every own dependency answers and every store's lag into this region is measured and within the
warning level. ``degraded``: it could take over, but something is not known or not comfortable (a lag above
the warning level or unknown, a heartbeat that is missing, or stale while the peer does not answer - which
is what a real region loss looks like from here). ``not_ready``: it cannot (an own dependency fails), or a
failover now would lose more than the RPO budget (a lag above budget, or a heartbeat stale while the peer
answers - or, once it is silent, while its other heartbeats kept arriving: replication had stalled; or the
last lag measured before it fell silent was above budget: the monitor carries that measurement from run to
run in its readiness record, so a silent peer cannot make a stall be forgotten).

Reasons are machine-readable and name the store or dependency. Peer liveness is reported next to the
verdict, not inside it: the failover handler corroborates it separately.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tandem_core.replication import STORES, HeartbeatState, Store, StoreReading


class Verdict(enum.StrEnum):
    READY = "ready"
    DEGRADED = "degraded"
    NOT_READY = "not_ready"


_RANK = {Verdict.READY: 0, Verdict.DEGRADED: 1, Verdict.NOT_READY: 2}


class Dependency(enum.StrEnum):
    """This region's own resources a takeover needs (metrics: only for measuring)."""

    DATABASE = "database"
    TABLE = "table"
    BUCKET = "bucket"
    QUEUE = "queue"
    METRICS = "metrics"


DEPENDENCIES: tuple[Dependency, ...] = tuple(Dependency)
OK = "ok"

_DEPENDENCY_SEVERITY = {
    Dependency.DATABASE: Verdict.NOT_READY,
    Dependency.TABLE: Verdict.NOT_READY,
    Dependency.BUCKET: Verdict.NOT_READY,
    Dependency.QUEUE: Verdict.NOT_READY,
    Dependency.METRICS: Verdict.DEGRADED,  # we can take over without CloudWatch; we just measure less
}


def dependency_reason(dep: Dependency) -> str:
    return f"own_{dep.value}_unreachable"


def all_reasons() -> dict[str, str]:
    """Every reason the verdict can give, with what it means (for docs, the CLI and the tests)."""
    reasons = {dependency_reason(d): f"this region's {d.value} does not answer" for d in DEPENDENCIES}
    for s in STORES:
        reasons |= {
            f"{s}_lag_above_budget": f"{s} lag into this region is above the RPO budget",
            f"{s}_lag_above_warning": f"{s} lag is above the warning level (within budget)",
            f"{s}_lag_unknown": f"{s} lag could not be measured",
            f"{s}_heartbeat_stale": f"the peer's {s} heartbeat here is older than the staleness threshold",
            f"{s}_heartbeat_missing": f"no {s} heartbeat from the peer has arrived here",
            f"{s}_stalled_before_peer_lost": f"the peer's {s} heartbeat stopped arriving here while its other "
            "heartbeats still did: replication had stalled before the peer went silent",
            f"{s}_lag_above_budget_before_peer_lost": f"the peer is silent and the last {s} lag measured here "
            "was above the RPO budget: a failover now would lose at least that",
        }
    return reasons


@dataclass(frozen=True)
class Thresholds:
    rpo_budget_seconds: float = 5.0
    warning_seconds: float = 2.0
    heartbeat_stale_seconds: float = 90.0

    def as_dict(self) -> dict[str, float]:
        return {
            "rpo_budget_seconds": self.rpo_budget_seconds,
            "warning_seconds": self.warning_seconds,
            "heartbeat_stale_seconds": self.heartbeat_stale_seconds,
        }


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reasons: tuple[str, ...]


def assess(
    dependencies: Mapping[Dependency, str],
    stores: Mapping[Store, StoreReading],
    peer_answers: bool | None,
    thresholds: Thresholds,
    *,
    peer_ledger_lost: bool = False,
) -> Assessment:
    """The verdict and its reasons (in a fixed order: dependencies, then stores aurora, dynamodb, s3).

    ``dependencies`` maps each dependency to "ok" or what went wrong (a missing one counts as failed);
    ``peer_answers`` is whether any probe of the peer's ingress succeeded in this run (None: not probed);
    ``peer_ledger_lost``: the peer says (with a fresh heartbeat) that its ledger cannot commit. Its Aurora
    heartbeat then stops because nothing commits there, not because replication stalled: for the ledger the
    peer counts as silent (what it committed before is judged by the last lag measured, as after a region
    loss), while its other stores keep their usual judgement.
    """
    found: list[tuple[str, Verdict]] = []
    for dep in DEPENDENCIES:
        if dependencies.get(dep) != OK:
            found.append((dependency_reason(dep), _DEPENDENCY_SEVERITY[dep]))
    for store in STORES:
        reading = stores.get(store)
        if reading is None:
            found.append((f"{store}_lag_unknown", Verdict.DEGRADED))
            continue
        if store is Store.AURORA and peer_ledger_lost:
            found += _store_reasons(reading, False, thresholds, None)
            continue
        found += _store_reasons(reading, peer_answers, thresholds, _peer_alive_age(store, stores))
    verdict = max((severity for _, severity in found), key=_RANK.__getitem__, default=Verdict.READY)
    return Assessment(verdict, tuple(reason for reason, _ in found))


def _peer_alive_age(store: Store, stores: Mapping[Store, StoreReading]) -> float | None:
    """How long ago the peer was last seen writing, by its *other* stores' heartbeats (None: none seen)."""
    ages = [
        r.heartbeat_age_seconds
        for s, r in stores.items()
        if s is not store and r.heartbeat_age_seconds is not None and r.heartbeat is not HeartbeatState.MISSING
    ]
    return min(ages, default=None)  # fmt: skip


def _store_reasons(
    reading: StoreReading, peer_answers: bool | None, t: Thresholds, peer_alive_age: float | None = None
) -> list[tuple[str, Verdict]]:
    s = reading.store
    out: list[tuple[str, Verdict]] = []
    lag = reading.lag_seconds
    last = reading.last_measured_lag_seconds
    if lag is None and not peer_answers and last is not None and last > t.rpo_budget_seconds:
        # The peer went silent while this store was behind: the lag cannot be measured any more, but nothing
        # that arrived since says it caught up. Forgetting it would turn a stall into a quiet data loss.
        out.append((f"{s}_lag_above_budget_before_peer_lost", Verdict.NOT_READY))
    elif lag is None:
        out.append((f"{s}_lag_unknown", Verdict.DEGRADED))
    elif lag > t.rpo_budget_seconds:
        out.append((f"{s}_lag_above_budget", Verdict.NOT_READY))
    elif lag > t.warning_seconds:
        out.append((f"{s}_lag_above_warning", Verdict.DEGRADED))
    if reading.heartbeat is HeartbeatState.STALE:
        # Stale while the peer answers its probe: the peer writes, the writes do not arrive - a stall, so the
        # lag is at least the heartbeat's age, far above budget. Stale while the peer is silent is what a
        # region loss looks like; that must not block the failover meant for it.
        # A silent peer whose other heartbeats kept arriving for a staleness threshold after this one stopped
        # was alive and writing while this store delivered nothing: the stall came first, and a failover now
        # would lose at least that gap. A region loss stops every heartbeat at once.
        age = reading.heartbeat_age_seconds
        if (
            not peer_answers
            and age is not None
            and peer_alive_age is not None
            and age - peer_alive_age > t.heartbeat_stale_seconds
        ):
            out.append((f"{s}_stalled_before_peer_lost", Verdict.NOT_READY))
        else:
            out.append((f"{s}_heartbeat_stale", Verdict.NOT_READY if peer_answers else Verdict.DEGRADED))
    elif reading.heartbeat is HeartbeatState.MISSING:
        out.append((f"{s}_heartbeat_missing", Verdict.DEGRADED))
    return out


# ---------------------------------------------------------------------------------------------- the record
READINESS_SK = "READINESS"


def readiness_key(region: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"READINESS#{region}"}, "sk": {"S": READINESS_SK}}


def readiness_record(
    *,
    region: str,
    role: str,
    assessment: Assessment,
    stores: Mapping[Store, StoreReading],
    dependencies: Mapping[Dependency, str],
    aurora_writer: bool | None,
    peer: Mapping[str, Any],
    measured_at: float,
    measured_at_iso: str,
    thresholds: Thresholds,
) -> dict[str, Any]:
    """The readiness record as plain data (the item's attributes besides the key, and the handler's answer)."""
    return {
        "region": region,
        "role": role,
        "verdict": assessment.verdict.value,
        "reasons": list(assessment.reasons),
        "lag_seconds": {s.value: stores[s].as_dict()["lag_seconds"] if s in stores else None for s in STORES},
        "stores": {s.value: stores[s].as_dict() for s in STORES if s in stores},
        "dependencies": {d.value: dependencies.get(d, "not checked") for d in DEPENDENCIES},
        "aurora_writer": aurora_writer,
        "peer": dict(peer),
        "measured_at": measured_at_iso,
        "measured_at_epoch": round(measured_at, 3),
        "thresholds": thresholds.as_dict(),
    }


def read_readiness(dynamodb: Any, table: str, region: str) -> dict[str, Any] | None:
    """``region``'s readiness record as this region's replica holds it (None: its monitor has not written one)."""
    from tandem_core.heartbeat import from_attributes  # only when read: cold starts that never read it skip it

    item = dynamodb.get_item(TableName=table, Key=readiness_key(region), ConsistentRead=True).get("Item")
    return None if item is None else from_attributes(item)

"""The drill's headline figures (detection, RTO, RPO, timeline) computed from records and ledger times alone."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tandem.drill.figures import Figures
from tandem.drill.observe import Clocks
from tandem.drill.producers import Accepted, Sent

PRIMARY, DR = "us-east-1", "us-west-2"
URLS = {PRIMARY: "http://127.0.0.1:1", DR: "http://127.0.0.1:2"}
ZERO = 1000.0  # wall epoch of the outage
SCALE = 60.0


@dataclass
class FakeView:
    """The parts of the twin the figures read: the clock scale, ingress URLs, the ledger's commit times."""

    committed: dict[str, float] = field(default_factory=dict)
    primary: str = PRIMARY
    dr: str = DR
    scale: float = SCALE

    def ingress(self, region: str) -> str:
        return URLS[region]

    def committed_at(self, region: str, ids: list[str]) -> dict[str, float]:
        return {t: at for t, at in self.committed.items() if t in ids}

    def lag_series(self, clocks: Clocks, zero: float, until: float) -> dict[str, list[list[float]]]:
        return {"aurora": [[0.0, 0.1]]}


def accepted(tid: str, wall: float, region: str) -> Accepted:
    return Accepted(json.dumps({"transaction_id": tid}), wall, URLS[region], 1, wall_at=wall)


def figures(view: FakeView, ended: float | None = ZERO + 5.0) -> Figures:
    return Figures(
        view, Clocks(ZERO, 0.0, SCALE), zero=ZERO, zero_label="outage start", began=ZERO - 2.0, ended=ended,  # type: ignore[arg-type]
        dns_answers=[(ZERO - 2.0, URLS[PRIMARY]), (ZERO + 1.0, URLS[DR])],
        disruption_events=[{"event": f"{PRIMARY} down", "at": 0.0}],
    )  # fmt: skip


FAILOVER = {
    "action": "failover", "outcome": "completed", "mode": "failover", "started_at": ZERO + 0.75,
    "rpo_estimate_seconds": 0.4,
    "steps": [{"name": "promote_database", "outcome": "completed", "started_at": ZERO + 0.8,
               "finished_at": ZERO + 1.5}],
}  # fmt: skip


def test_detection_rto_and_rpo_come_from_the_records_and_the_ledger() -> None:
    # t-1 accepted by the primary before the outage and re-applied from the journal; t-2 accepted by DR after it
    view = FakeView({"t-1": ZERO + 3.0, "t-2": ZERO + 2.0})
    sent = Sent([accepted("t-1", ZERO - 0.5, PRIMARY), accepted("t-2", ZERO + 1.2, DR)])
    waited = {"action": "reconcile", "outcome": "waiting", "started_at": ZERO + 5.0, "steps": [],
              "reasons": [f"{PRIMARY}'s processing to be off"],
              "report": {"journal": {"reapplied_ids": ["t-1"]}}}  # fmt: skip
    reconciled = {"action": "reconcile", "outcome": "completed", "started_at": ZERO + 6.0, "steps": [],
                  "reasons": [], "report": {"journal": {"reapplied_ids": []}}}  # fmt: skip

    found = figures(view).failover([FAILOVER], [waited, reconciled], sent, DR)

    assert (found["executions"], found["refusals"], found["outcome"], found["mode"]) == (1, 0, "completed", "failover")
    assert found["detection_seconds"] == 45.0  # 0.75 wall s at x60
    assert found["rto_seconds"] == 120.0  # t-2, accepted after zero, committed by DR after its promotion
    assert (found["rpo_transactions"], found["rpo_seconds"]) == (1, 120.0)  # t-1 accepted 2 wall s before promotion
    assert found["outage_seconds"] == 300.0
    assert [e["event"] for e in found["timeline"]] == [
        f"{PRIMARY} down", f"DNS answers {DR}", "failover: promote_database completed",
        f"reconcile waits for {PRIMARY}'s processing to be off",
    ]  # fmt: skip
    assert found["reconcile"]["runs"] == 2  # what the waiting run re-applied counts: t-1 above
    assert (found["reconcile"]["waited_for"], found["reconcile"]["waited_seconds"]) == (
        [f"{PRIMARY}'s processing to be off"], 60.0,
    )  # fmt: skip


def test_what_the_dead_primary_had_accepted_but_not_applied_is_stranded_and_part_of_the_rpo() -> None:
    """Finding 5 of the backlog issue: a message the primary's ingress accepted lives only in its queue until
    it is processed; applied after the promotion (forwarded once the primary returned), it counts."""
    # t-1 re-applied from the journal; t-3 accepted by the primary, applied by DR after the promotion (stranded);
    # t-4 accepted by the primary and committed before it died (its row reached DR): nothing lost
    view = FakeView({"t-1": ZERO + 3.0, "t-3": ZERO + 6.0, "t-4": ZERO - 0.2})
    sent = Sent([accepted("t-1", ZERO - 0.5, PRIMARY), accepted("t-3", ZERO - 0.4, PRIMARY),
                 accepted("t-4", ZERO - 0.9, PRIMARY)])  # fmt: skip
    reconciled = {"action": "reconcile", "outcome": "completed", "started_at": ZERO + 6.0, "steps": [],
                  "reasons": [], "report": {"journal": {"reapplied_ids": ["t-1"]}}}  # fmt: skip

    found = figures(view).failover([FAILOVER], [reconciled], sent, DR)

    assert (found["rpo_transactions"], found["rpo_reapplied_from_journal"], found["stranded_at_promotion"]) == (2, 1, 1)
    assert found["rpo_seconds"] == 120.0  # the oldest of them (t-1, 0.5 s before zero) to the promotion (1.5 s after)
    assert "1 accepted message(s) stranded in us-east-1 at promotion" in [e["event"] for e in found["timeline"]]


def test_a_refusal_is_detection_but_not_an_execution_and_the_rto_waits_for_the_primary() -> None:
    # sent to DR during the outage and forwarded back, committed once the primary returned (ZERO + 5)
    view = FakeView({"t-2": ZERO + 5.2, "t-3": ZERO + 6.0})
    refusal = {"action": "failover", "outcome": "refused", "mode": None, "started_at": ZERO + 1.0,
               "reasons": ["region_not_ready"], "steps": []}  # fmt: skip
    sent = Sent([accepted("t-2", ZERO + 0.5, DR), accepted("t-3", ZERO + 5.5, PRIMARY)])

    found = figures(view).failover([refusal], [], sent, PRIMARY)

    assert (found["executions"], found["refusals"], found["refusal_reasons"]) == (0, 1, ["region_not_ready"])
    assert found["detection_seconds"] == 60.0
    assert found["rto_seconds"] == 312.0
    assert found["rpo_seconds"] == 0.0
    assert "failover refused: region_not_ready" in [e["event"] for e in found["timeline"]]


def test_the_series_gives_each_commit_to_the_writer_of_its_moment() -> None:
    view = FakeView({"t-1": ZERO - 1.0, "t-2": ZERO + 2.0})

    class Wl:
        def transfers(self) -> list[str]:
            return ["t-1", "t-2"]

    found: dict[str, Any] = figures(view).series(Wl(), {"outage_seconds": 300.0}, DR, ZERO + 1.5)  # type: ignore[arg-type]

    assert found["commits"] == {PRIMARY: [-60.0], DR: [120.0]}
    assert found["dns"] == [[-120.0, PRIMARY], [60.0, DR]]
    assert found["outage"] == [0.0, 300.0]
    assert found["lag"] == {"aurora": [[0.0, 0.1]]}

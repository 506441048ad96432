"""The two-region scenarios of the drill, each a :class:`~tandem.drill.scenarios.Scenario` saying what happens
to the primary region and what is expected of it (``tandem drill --scenario NAME``; ``all`` runs them in turn).

- ``region-loss``: the primary dies (API, ingress, database) and returns ``--outage-for`` later. Nobody calls
  the failover handler: the DR monitor's alarms detect it, EventBridge invokes the handler, the handler
  fails over; once the old primary answers again the monitor asks for reconciliation. Expected: one
  completed failover, nothing lost after reconciliation.
- ``switchover``: an operator asks for a planned switchover mid-stream (the drill is that operator).
  Expected: one completed switchover and nothing lost even before any reconciliation.
- ``blip``: the primary is down for less than the detection window. Expected: no execution at all, and
  what producers sent to DR meanwhile is forwarded back and committed.
- ``dr-not-ready``: Aurora replication to DR is paused past the RPO budget, then the primary dies.
  Expected: the automatic failover is refused and paged (an SQS queue subscribed to DR's alarm topic is the
  on-call's pager), nothing changes, and once the primary returns nothing is lost.
- ``backlog``: Aurora and S3 replication stall for a few seconds (inside the RPO budget), then the primary dies
  with commits DR never got and objects not copied; everything DR writes meanwhile is held for it too. It
  returns and the held replication arrives slowly (2 changes per emulated second). Expected: one completed
  failover; reconciliation waits (for the old primary to learn the new epoch, which is queued behind the
  backlog, and for its last batches) and then nothing is lost.
- ``partition``: the primary is cut off but alive - its producers still reach it and it keeps committing,
  nothing crosses to DR. DR fails over; the partition heals; the old primary learns the new epoch and fences
  itself. Expected: one completed failover, the primary committed alone while cut off, and reconciliation
  applies all of it: nothing lost, nothing twice, every status equal to the ledger.
- ``stuck-promotion``: the region loss, and the first two Aurora promotions fail (``tandem twin fault promotion``).
  Expected: the failure is paged (``FAILED at promote_database``), the execution is resumed without a human -
  Lambda's retry of the alarm's event, then the monitor's ``resume`` - and completes once; nothing lost.
- ``grey-database``: only the primary's database dies; its ingress, queue, functions and monitor keep
  working, so ``/health`` stays green and its heartbeat keeps arriving - the region-loss signals never fire.
  The primary's heartbeat says its ledger cannot commit. Expected: one completed failover (not a switchover),
  decided within the detection budget, nothing lost after reconciliation.
- ``dr-fault``: DR itself is cut off (its calls to the primary fail, replication into it is held) while the
  primary is healthy: from DR this is exactly the primary's loss. Expected: no failover - Route53's health
  checkers, outside DR, still see the primary healthy - and a page that names DR's own fault; nothing lost.
- ``retry-storm``: the region loss, with producers that retry like real clients: a fifth of first answers are
  lost on the way back (the message was accepted; the client sends it again) and half the retries re-stamp
  ``created_at``. Expected: as region-loss, and no transfer applied twice, every status equal to the ledger.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from typing import Any

from tandem.drill.observe import TwinView
from tandem.drill.scenarios import Findings, Progress, Scenario, ScenarioOptions
from tandem.twin.control import call

#: each scenario's twin clock. x60 keeps the monitor's heartbeat within the scaled alarm threshold on this
#: 2-core machine and lets poison reach the DLQ in 16 s. The blip runs at x30: the twin needs ~0.8 s of real
#: time to kill and restore a region (a PostgreSQL crash restart), 48 emulated seconds at x60 - too close to
#: the ~70 s detection window for a blip to be one. The grey database runs at x30 too: its detection is judged
#: against a budget in emulated seconds, and every real second the twin itself spends on the path costs 30
#: of them there rather than 60.
SCALES = {"region-loss": 60.0, "switchover": 60.0, "blip": 30.0, "dr-not-ready": 60.0, "backlog": 60.0,
          "partition": 60.0, "retry-storm": 60.0, "stuck-promotion": 60.0, "grey-database": 30.0,
          "dr-fault": 60.0}  # fmt: skip
SCENARIOS = tuple(SCALES)
#: after a blip, how long (emulated s) the alarms get to fire late before "no failover" is believed
BLIP_SETTLE_SECONDS = 120.0
#: a grey database failure is decided within this many seconds of the database's death in AWS: the first
#: failed observation within a 10-s round, the fourth 30 s later (PeerLedgerFailingAlarmSeconds 30), ~1 s of
#: replication, the peer's next 10-s round and the alarm's evaluation: ~55 s
DETECTION_BUDGET_SECONDS = 60.0
#: what the twin adds on that path in real seconds, whatever its clock: the global table's replication and
#: the monitor's start of run under the drill's workload (0.5-1 s each), the EMF extraction, alarm and event
#: ticks and the handler's own calls - 1.4 to 3.7 s measured on this 2-core machine under the workload (one
#: loaded Python process serves both regions), x30 in emulated seconds. A faster twin would tighten it.
TWIN_PATH_REAL_SECONDS = 4.0


class RegionLoss(Scenario):
    name = "region-loss"
    expected = ("one completed failover, nothing lost after reconciliation; with the durable ingress, what the "
                "dead primary had accepted is applied before it returns; the master secret rotated mid-traffic "
                "changes nothing of it")  # fmt: skip
    default_outage = 300.0
    rotate_master_at = 0.5  # half-way through the traffic before the outage

    def settle(self, deadline: float) -> None:
        self.progress("waiting for the failover and the reconciliation after it")
        self.wait(self.completed("failover"), deadline, "the failover to complete")
        self.wait(self.completed("reconcile"), deadline, "reconciliation after the outage")

    def expectations(self, found: Findings) -> dict[str, bool]:
        found_all = {
            "one_completed_failover": found.ran == [("failover", "completed")],
            "dr_active": found.active == self.dr,
        }
        if self.view.durable_ingress(self.primary):
            failover = found.failover or {}
            found_all["accepted_applied_before_the_primary_returned"] = failover.get(
                "stranded_applied_before_return"
            ) == failover.get("stranded_at_promotion")
        return found_all


class Switchover(Scenario):
    name = "switchover"
    expected = "one completed planned switchover, nothing lost even before reconciliation"
    zero_label = "switchover requested"

    def disrupt(self) -> None:
        def request() -> None:
            try:
                self.progress(f"an operator asks for a switchover to {self.dr}")
                self.disruption.answer = self.view.handler(self.dr, {"action": "switchover"})
                self.disruption.ended = time.time()
            except Exception as exc:
                self.disruption.error = f"the switchover request failed: {exc}"
            finally:
                self.disruption.over.set()

        threading.Thread(target=request, name="operator", daemon=True).start()

    def disruption_events(self) -> list[dict[str, Any]]:
        zero = self.disruption.started or self.began
        return [{"event": f"switchover to {self.dr} requested", "at": 0.0},
                {"event": "switchover answered", "at": self.clocks.since(zero, self.disruption.ended)}]  # fmt: skip

    def expectations(self, found: Findings) -> dict[str, bool]:
        return {"one_completed_switchover": found.ran == [("switchover", "completed")],
                "nothing_lost_before_reconcile": found.result["lost_before_reconcile"] == 0,
                "dr_active": found.active == self.dr}  # fmt: skip


class Blip(Scenario):
    name = "blip"
    expected = "no failover (the outage is shorter than the detection window), nothing lost"
    default_outage = 1.0

    def settle(self, deadline: float) -> None:
        self.progress(f"the blip is over; giving the alarms {BLIP_SETTLE_SECONDS:g} emulated s to fire late")
        time.sleep(max(0.0, min(BLIP_SETTLE_SECONDS / self.scale, deadline - time.monotonic())))

    def expectations(self, found: Findings) -> dict[str, bool]:
        return {"no_failover": not found.failovers, "primary_active": found.active == self.primary}


class Pager:
    """The on-call's pager while a scenario runs: an SQS queue subscribed to a region's alarm topic."""

    def __init__(self, view: TwinView, region: str) -> None:
        self._sqs, self._sns = view.client(region, "sqs"), view.client(region, "sns")
        self._url = self._sqs.create_queue(QueueName=f"tandem-drill-pager-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        topic = view.resource(region, "alarm_topic_arn")
        self._subscription = self._sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
        self._taken: list[dict[str, Any]] | None = None

    def take(self) -> list[dict[str, Any]]:
        """What it received (each SNS message's JSON object; {} for one that is not), then it is removed."""
        if self._taken is None:
            found: list[dict[str, Any]] = []
            while msgs := self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10).get("Messages", []):
                found += [_json_object(json.loads(m["Body"]).get("Message")) for m in msgs]
                self._sqs.delete_message_batch(QueueUrl=self._url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])  # fmt: skip
            self._sns.unsubscribe(SubscriptionArn=self._subscription)
            self._sqs.delete_queue(QueueUrl=self._url)
            self._taken = found
        return self._taken


class Paging(Scenario):
    """A scenario whose expectations read the on-call's pager: an SQS queue on DR's alarm topic from
    :meth:`prepare` on, emptied and removed by :meth:`take_pages`."""

    def __init__(self, view: TwinView, options: ScenarioOptions, progress: Progress | None = None) -> None:
        super().__init__(view, options, progress)
        self.pager: Pager | None = None
        self.pages: list[dict[str, Any]] = []

    def prepare(self, deadline: float) -> None:  # noqa: ARG002 - nothing to wait for
        self.pager = Pager(self.view, self.dr)

    def take_pages(self) -> list[dict[str, Any]]:
        """Every message the pager received (once; later calls answer the same)."""
        return [] if self.pager is None else self.pager.take()


class DrNotReady(Paging):
    name = "dr-not-ready"
    expected = "the automatic failover refused and paged, nothing changed, nothing lost once the primary returns"
    default_outage = 240.0

    def __init__(self, view: TwinView, options: ScenarioOptions, progress: Progress | None = None) -> None:
        super().__init__(view, options, progress)
        self.paged: set[str] = set()  # execution ids the pager received
        self.paged_reasons: set[str] = set()  # the readiness reasons those pages gave
        self.paused = False

    def prepare(self, deadline: float) -> None:
        super().prepare(deadline)
        call(self.view.state_dir, "POST", "/replication/pause/aurora")
        self.paused = True
        self.progress(f"Aurora replication to {self.dr} paused: waiting for the stall to show")
        self.wait(self._stalled, deadline, f"{self.dr} to see Aurora's lag above the RPO budget")

    def _stalled(self) -> bool:
        """DR not ready because Aurora's lag is above the budget - as soon as it shows, far below the heartbeat's
        staleness threshold: the monitor carries that last measurement once the primary is silent."""
        record = self.view.readiness_record(self.dr)
        return record.get("verdict") == "not_ready" and "aurora_lag_above_budget" in record.get("reasons", [])

    def settle(self, deadline: float) -> None:  # noqa: ARG002 - nothing to wait for
        """Replication resumes; the scenario does not wait for DR to read ``ready`` again: what it judges (the
        refusal, the page, nothing lost) does not depend on it. A later scenario on a running twin waits for
        DR's readiness in its preflight."""
        self._resume()

    def cleanup(self) -> None:
        self._resume()
        messages = self.take_pages()
        pages = [m for m in messages if m.get("execution_id")]  # the rest: CloudWatch's alarm notifications
        self.paged = {str(page["execution_id"]) for page in pages}
        self.paged_reasons = {str(r) for page in pages for r in page.get("readiness_reasons") or []}
        if messages:
            self.notes.append(
                f"the alarm topic carried {len(pages)} refusal page(s) and {len(messages) - len(pages)} alarm "
                f"notification(s); {self.dr}'s readiness reasons in the pages: {sorted(self.paged_reasons)}"
            )

    def _resume(self) -> None:
        if self.paused:
            call(self.view.state_dir, "POST", "/replication/resume/aurora")
            self.paused = False

    def expectations(self, found: Findings) -> dict[str, bool]:
        refused = found.refused
        return {
            "failover_refused_not_ready": bool(refused) and len(refused) == len(found.failovers)
            and all("region_not_ready" in (e.get("reasons") or []) for e in refused),
            "refusal_paged": bool(refused) and all(e["id"] in self.paged for e in refused),
            "page_names_aurora_behind": any(r.startswith("aurora_") for r in self.paged_reasons),
            "primary_active": found.active == self.primary,
        }  # fmt: skip


class Backlog(RegionLoss):
    name = "backlog"
    expected = ("one completed failover; the primary returns with a replication backlog, reconciliation waits for "
                "it and nothing is lost after")  # fmt: skip
    default_outage = 240.0
    backlog_pace = 2.0
    #: emulated seconds Aurora and S3 replication stall before the primary dies: inside the RPO budget (5 s),
    #: so DR may still take over, but long enough for commits DR never gets
    stall_seconds = 3.0

    def __init__(self, view: TwinView, options: ScenarioOptions, progress: Progress | None = None) -> None:
        super().__init__(view, options, progress)
        self.backlog = 0  # changes and objects held for the primary when it returned

    def disrupt(self) -> None:
        def stall_then_die() -> None:
            try:
                for store in ("aurora", "s3"):
                    call(self.view.state_dir, "POST", f"/replication/pause/{store}")
                time.sleep(self.stall_seconds / self.scale)
                self.kill_primary()
                for store in ("aurora", "s3"):  # the outage holds the primary's replication from here on
                    call(self.view.state_dir, "POST", f"/replication/resume/{store}")
            except Exception as exc:
                self.disruption.error = f"the stall before the outage failed: {exc}"
                self.disruption.over.set()

        threading.Thread(target=stall_then_die, name="backlog", daemon=True).start()

    def _restore(self) -> None:
        super()._restore()
        replication = call(self.view.state_dir, "GET", "/status")["replication"]
        self.backlog = int(replication["dynamodb_pending_changes"]) + int(replication["s3_pending_objects"])
        self.notes.append(
            f"backlog when {self.primary} returned: {replication['dynamodb_pending_changes']} DynamoDB change(s), "
            f"{replication['s3_pending_objects']} S3 object(s), arriving at {self.backlog_pace:g} per emulated s"
        )

    def expectations(self, found: Findings) -> dict[str, bool]:
        waited = (found.reconcile or {}).get("waited_for") or []
        return {**super().expectations(found), "returned_with_a_backlog": self.backlog > 0,
                "reconciliation_waited": bool(waited)}  # fmt: skip


class Partition(RegionLoss):
    name = "partition"
    expected = ("one completed failover while the primary is cut off but alive; healed, it fences itself and "
                "reconciliation applies what it committed alone: nothing lost, nothing twice")  # fmt: skip
    #: longer than region-loss's: a cut-off primary's heartbeat ages in DR as a dead one's does, but detection
    #: measured up to 290 s on this machine under the drill's load, and a heal before it means no failover
    default_outage = 480.0
    backlog_pace = 20.0
    cut_and_mend = ("partition", "heal")
    words = ("cut off", "connected again")

    def cleanup(self) -> None:
        if self.disruption.started is not None and not self.disruption.over.is_set():
            with contextlib.suppress(Exception):  # a run cut short must not leave the twin partitioned
                call(self.view.state_dir, "POST", f"/heal/{self.primary}")

    def expectations(self, found: Findings) -> dict[str, bool]:
        """Not the durable ingress's promise: nothing the primary accepts crosses while it is cut off."""
        return {
            "one_completed_failover": found.ran == [("failover", "completed")],
            "dr_active": found.active == self.dr,
            "primary_committed_while_cut_off": found.result["lost_before_reconcile"] > 0,
        }


class RetryStorm(RegionLoss):
    name = "retry-storm"
    expected = ("one completed failover while producers retry like real clients (lost answers, re-stamped "
                "created_at): nothing lost after reconciliation, nothing applied twice")  # fmt: skip
    restamp_share = 0.5
    lost_answer_share = 0.2

    def expectations(self, found: Findings) -> dict[str, bool]:
        return {**super().expectations(found), "answers_were_lost": self.sent.lost_answers > 0,
                "retries_were_restamped": self.sent.restamped > 0}  # fmt: skip


class StuckPromotion(Paging, RegionLoss):
    name = "stuck-promotion"
    expected = ("the primary dies and the first promotion fails: the failure is paged, the execution is resumed "
                "without a human and completes; nothing lost after reconciliation")  # fmt: skip
    #: Aurora promotions that fail before one goes through (each resumed by Lambda's retry of the alarm event,
    #: then by the monitor every minute)
    failed_promotions = 2

    def prepare(self, deadline: float) -> None:
        super().prepare(deadline)
        call(self.view.state_dir, "POST", "/faults/promotion", body={"fail": self.failed_promotions})

    def cleanup(self) -> None:
        call(self.view.state_dir, "POST", "/faults/promotion", body={"fail": 0})
        self.pages = [p for p in self.take_pages() if p.get("failed_steps")]
        self.notes.append(
            f"{len(self.pages)} page(s) of a failed step: {[sorted(p['failed_steps']) for p in self.pages]}"
        )

    def expectations(self, found: Findings) -> dict[str, bool]:
        execution = found.failovers[0] if found.failovers else {}
        promotions = [s["outcome"] for s in execution.get("steps", []) if s["name"] == "promote_database"]
        return {
            **super().expectations(found),
            "promotion_failed_then_completed": promotions[:1] == ["failed"] and promotions[-1:] == ["completed"],
            "failure_paged": any("promote_database" in p["failed_steps"] for p in self.pages),
        }


class GreyDatabase(RegionLoss):
    name = "grey-database"
    expected = (
        "the primary's database dies under an ingress that still answers: one completed failover (not a "
        f"switchover), decided within {DETECTION_BUDGET_SECONDS:g} s, nothing lost after reconciliation"
    )
    cut_body = {"only": "database"}  # noqa: RUF012 - a ClassVar of the base
    words = ("database down (its ingress, queue and functions still up)", "database back")
    #: a dead cluster stays dead for a while: the failover completes before it returns
    default_outage = 400.0

    @property
    def budget(self) -> float:
        """The detection budget on this twin's clock: AWS's, plus what the twin's own path costs at its scale."""
        return DETECTION_BUDGET_SECONDS + TWIN_PATH_REAL_SECONDS * self.scale

    def expectations(self, found: Findings) -> dict[str, bool]:
        """Not the durable ingress's promise: the primary's ingress never went away (its own monitor forwards
        what its queue holds once it is fenced)."""
        detection = (found.failover or {}).get("detection_seconds")
        self.notes.append(
            f"detection budget on this clock: {self.budget:g} emulated s "
            f"({DETECTION_BUDGET_SECONDS:g} + {TWIN_PATH_REAL_SECONDS:g} real s of the twin's own path)"
        )
        return {
            "one_completed_failover": found.ran == [("failover", "completed")],
            "dr_active": found.active == self.dr,
            "detected_within_budget": isinstance(detection, int | float) and detection <= self.budget,
        }


class DrFault(Paging):
    name = "dr-fault"
    expected = ("DR cut off from a healthy primary (its calls out and the replication into it): no failover, a page "
                "that names DR's own fault, nothing lost")  # fmt: skip
    cut_and_mend = ("partition", "heal")
    words = ("cut off from the primary (DR's own fault)", "connected again")
    struck_role = "dr"
    #: long enough for DR's alarm to fire (as a partition's, up to ~290 s here under the drill's load)
    default_outage = 420.0
    backlog_pace = 20.0

    def settle(self, deadline: float) -> None:
        self.progress("waiting for DR's refusal")
        self.wait(lambda: any(e["outcome"] == "refused" for e in self.view.executions("failover", self.began)),
                  deadline, f"{self.dr}'s automatic failover to be refused")  # fmt: skip

    def cleanup(self) -> None:
        if self.disruption.started is not None and not self.disruption.over.is_set():
            with contextlib.suppress(Exception):  # a run cut short must not leave the twin partitioned
                call(self.view.state_dir, "POST", f"/heal/{self.dr}")
        self.pages = [p for p in self.take_pages() if p.get("execution_id")]
        self.notes.append(f"{len(self.pages)} refusal page(s): {[p.get('hint', '')[:60] for p in self.pages]}")

    def expectations(self, found: Findings) -> dict[str, bool]:
        refused = found.refused
        return {
            "no_failover": not found.ran,
            "refused_as_drs_own_fault": bool(refused)
            and all("peer_healthy_from_outside" in (e.get("reasons") or []) for e in refused),
            "page_names_drs_own_fault": any("own fault" in str(p.get("hint", "")) for p in self.pages),
            "primary_active": found.active == self.primary,
        }


KINDS: dict[str, type[Scenario]] = {
    k.name: k
    for k in (RegionLoss, Switchover, Blip, DrNotReady, Backlog, Partition, RetryStorm, StuckPromotion, GreyDatabase,
              DrFault)
}  # fmt: skip


def _json_object(text: Any) -> dict[str, Any]:
    """A message body as a JSON object ({} for anything else: a page we cannot read names nothing)."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

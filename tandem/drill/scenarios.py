"""The two-region scenarios: producers keep sending through the public name while something happens to the
primary region, and the data then says what it cost.

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
- ``retry-storm``: the region loss, with producers that retry like real clients: a fifth of first answers are
  lost on the way back (the message was accepted; the client sends it again) and half the retries re-stamp
  ``created_at``. Expected: as region-loss, and no transfer applied twice, every status equal to the ledger.

Figures (emulated seconds from the scenario's zero: the outage's start, or the switchover request):
- detection: zero -> the first failover record (an execution or a refusal) in DR;
- RTO: zero -> the first commit, by the region active at the end, of a transaction accepted after zero;
- RPO: what DR's ledger lacked at promotion - the transactions reconciliation re-applied from the journal -
  and the time from the oldest of them being accepted to the promotion.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tandem.drill.audit import audit, snapshot
from tandem.drill.figures import OUTAGE_START, Figures, first_ran, step_end
from tandem.drill.observe import Clocks, TwinView
from tandem.drill.producers import Producers, Resolver, Sent
from tandem.drill.queues import take_dlq
from tandem.drill.workload import Workload
from tandem.twin.control import call

RECORD = "txn.tandem.twin.internal"
#: each scenario's twin clock. x60 keeps the monitor's heartbeat within the scaled alarm threshold on this
#: 2-core machine and lets poison reach the DLQ in 16 s. The blip runs at x30: the twin needs ~0.8 s of real
#: time to kill and restore a region (a PostgreSQL crash restart), 48 emulated seconds at x60 - too close to
#: the ~70 s detection window for a blip to be one.
SCALES = {"region-loss": 60.0, "switchover": 60.0, "blip": 30.0, "dr-not-ready": 60.0, "backlog": 60.0,
          "partition": 60.0, "retry-storm": 60.0}  # fmt: skip
SCENARIOS = tuple(SCALES)
#: after a blip, how long (emulated s) the alarms get to fire late before "no failover" is believed
BLIP_SETTLE_SECONDS = 120.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ScenarioOptions:
    outage_at: float = 0.3  # fraction of the workload sent when the disruption starts
    outage_for: float | None = None  # emulated seconds until the primary returns (None: the scenario's own)
    producers: int = 4
    rate: float = 2.0  # messages per emulated second, all producers together (0: as fast as they go)

    def __post_init__(self) -> None:
        if not 0.0 <= self.outage_at <= 1.0:
            raise ValueError(f"--outage-at is a fraction of the workload, 0 to 1, not {self.outage_at}")
        if self.outage_for is not None and not 0 < self.outage_for < 86400:
            raise ValueError(f"--outage-for must be > 0 emulated seconds (and under a day), not {self.outage_for}")
        if not 0 <= self.rate < 1e6:
            raise ValueError(f"--rate must be messages per emulated second >= 0 (0: unpaced), not {self.rate}")
        if self.producers < 1:
            raise ValueError(f"--producers must be at least 1, not {self.producers}")


@dataclass(frozen=True)
class Findings:
    """What a scenario's expectations are judged on: the failover records since it began, the audit's result
    and the region active at the end."""

    failovers: list[dict[str, Any]]
    result: dict[str, Any]
    active: str
    failover: dict[str, Any] | None = None  # the failover part of the report (figures, reconciliation)

    @property
    def reconcile(self) -> dict[str, Any] | None:
        """The failover report's reconciliation part (what it waited for)."""
        return None if self.failover is None else self.failover.get("reconcile")

    @property
    def ran(self) -> list[tuple[str, str]]:
        """The executions that ran (refusals are records, not executions), as (mode, outcome)."""
        return [(e["mode"], e["outcome"]) for e in self.failovers if e["outcome"] != "refused"]

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [e for e in self.failovers if e["outcome"] == "refused"]


@dataclass
class Disruption:
    """When the scenario's disruption started and (for an outage) ended, in wall-clock epoch seconds."""

    started: float | None = None
    ended: float | None = None
    over: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None  # an operator request's answer
    error: str | None = None


class Scenario:
    """The machinery every two-region scenario shares; subclasses say what happens and what is expected."""

    name: ClassVar[str]
    expected: ClassVar[str]
    zero_label: ClassVar[str] = OUTAGE_START
    default_outage: ClassVar[float | None] = None
    #: how the producers retry (see tandem.drill.producers): shares of re-stamped retries and lost first answers
    restamp_share: ClassVar[float] = 0.0
    lost_answer_share: ClassVar[float] = 0.0
    #: changes per emulated second the held replication arrives at once the primary is back (None: at once)
    backlog_pace: ClassVar[float | None] = None
    #: what the disruption does to the primary and what undoes it (the twin's control API), and their words
    cut_and_mend: ClassVar[tuple[str, str]] = ("outage", "restore")
    words: ClassVar[tuple[str, str]] = ("down", "back")

    def __init__(self, view: TwinView, options: ScenarioOptions, progress: Progress | None = None) -> None:
        self.view, self.options = view, options
        self.primary, self.dr, self.scale = view.primary, view.dr, view.scale
        self.progress = progress or (lambda _line: None)
        self.outage_for = options.outage_for if options.outage_for is not None else self.default_outage
        self.disruption = Disruption()
        self.began = time.time()
        self.clocks = Clocks(self.began, 0.0, self.scale)
        self.resolver: Resolver | None = None
        self.sent = Sent()
        self.notes: list[str] = []
        self._disrupting = threading.Lock()

    # ------------------------------------------------------------------------------------------ the run
    def run(self, wl: Workload, bodies: list[str], deadline: float) -> dict[str, Any]:
        self._preflight(deadline)
        try:
            self.prepare(deadline)
            self.clocks = self.view.clocks()
            self.began = time.time()  # a failover from here on before the disruption would be a spurious one
            before = snapshot(self.view.target(self.primary))
            sent = self.sent = self._produce(bodies, round(self.options.outage_at * len(bodies)), deadline)
            self.progress(f"sent: {len(sent.accepted)} accepted, {len(sent.gave_up)} given up")
            self._disrupt_once()  # an empty workload: the disruption still happens
            self.disruption.over.wait(max(0.0, deadline - time.monotonic()))
            if self.disruption.error:
                raise RuntimeError(self.disruption.error)
            self.settle(deadline)
        finally:
            self.cleanup()
        self.progress("waiting for every queue to drain")
        self.wait(self.view.queues_settled, deadline, "every queue to drain")
        control, records = self.view.history(self.began)
        active = str(control["active_region"])
        dlq = [body for region in (self.primary, self.dr) for body in take_dlq(self.view.target(region))]
        self.progress("auditing")
        outcome = audit(self.view.target(active), wl, before, dlq)
        failovers = records.get("failover", []) + records.get("switchover", [])
        reconciles = records.get("reconcile", [])
        figures = Figures(
            self.view, self.clocks, zero=self.disruption.started or self.began, zero_label=self.zero_label,
            began=self.began, ended=self.disruption.ended, dns_answers=self.resolver.answers if self.resolver else [],
            disruption_events=self.disruption_events(), notes=self.notes,
        )  # fmt: skip
        failover = {"scenario": self.name, "expected": self.expected,
                    **figures.failover(failovers, reconciles, sent, active)}  # fmt: skip
        lost = outcome["result"]["lost"]
        outcome["result"].update(
            lost_before_reconcile=lost + failover["rpo_transactions"], lost_after_reconcile=lost,
            reconciled=failover["rpo_transactions"], stranded_at_promotion=failover["stranded_at_promotion"],
        )  # fmt: skip
        invariants = outcome["invariants"]
        invariants["every_message_accepted"] = not sent.gave_up
        invariants.update(self.expectations(Findings(failovers, outcome["result"], active, failover)))
        invariants["nothing_lost_after_reconcile"] = lost == 0
        series = figures.series(wl, failover, active, step_end(first_ran(failovers), "promote_database"))
        producers = figures.producers(sent, self.options.producers, self.resolver.lookups if self.resolver else 0)
        return {**outcome, "failover": failover, "producers": producers, "series": series, "notes": self.notes}

    # ------------------------------------------------------------------------------------------ hooks
    def prepare(self, deadline: float) -> None:
        """Before the workload: put the twin in the scenario's starting state."""

    def disrupt(self) -> None:
        """The disruption, once the outage point of the workload is reached: by default the primary dies."""
        self.kill_primary()

    def settle(self, deadline: float) -> None:
        """After the disruption is over: wait for what the scenario expects to happen by itself."""

    def cleanup(self) -> None:
        """Undo what :meth:`prepare` did, whatever happened (the twin may be audited or reused afterwards)."""

    def expectations(self, found: Findings) -> dict[str, bool]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ steps
    def _preflight(self, deadline: float) -> None:
        """The primary active (failing back first, as an operator would, after an earlier scenario), DR ready,
        the alarm armed (it must come from OK: the bootstrap guard) and automatic failover on."""
        if self.view.control()["active_region"] != self.primary:
            self._fail_back(deadline)
        if not self.view.automatic_failover_on():
            raise RuntimeError(f"automatic failover is off in {self.dr} (rule disabled): nothing would fail over")
        self.wait(lambda: self.view.readiness(self.dr) == "ready", deadline, f"{self.dr} to be ready")
        self.wait(lambda: self.view.impaired_alarm() == "OK", deadline, "the peer-region-impaired alarm to be OK")
        self._minimum_delay_passed(deadline)

    def _minimum_delay_passed(self, deadline: float) -> None:
        """An execution that finished less than FailoverMinDelaySeconds ago would have the scenario's own refused.
        On the twin that delay passes in real seconds (its functions read the machine's clock): wait up to a
        minute, then say what to do rather than wait half an hour."""

        def passed() -> bool:
            plan = self.view.handler(self.dr, {"action": "plan"})["plan"]
            return "minimum_delay_not_passed" not in plan["refused"]

        try:
            self.wait(passed, min(deadline, time.monotonic() + 60), "the minimum delay since the last execution")
        except TimeoutError:
            raise RuntimeError(
                "an execution finished less than FailoverMinDelaySeconds ago (real seconds on the twin), so this "
                "scenario's failover would be refused; wait, or start the twin with "
                "`tandem twin up --parameter-overrides FailoverMinDelaySeconds=5`"
            ) from None

    def _fail_back(self, deadline: float) -> None:
        """Back to the primary as an operator would: once it has caught up (a planned switchover, RPO 0). The
        minimum delay between executions guards automatic decisions against flapping and passes in *real*
        seconds on the twin (its functions read the machine's clock): when it is the only refusal, the drill
        overrides it (``failover --force`` to the primary), never readiness."""
        self.progress(f"{self.dr} is active since an earlier run: failing back to {self.primary} first")

        def plan() -> dict[str, Any] | None:
            if self.view.readiness(self.primary) != "ready":
                return None
            found: dict[str, Any] = self.view.handler(self.primary, {"action": "plan"})["plan"]
            ok = found["mode"] == "switchover" and set(found["refused"]) <= {"minimum_delay_not_passed"}
            return found if ok else None

        found = self.wait(plan, deadline, f"{self.primary} to catch up for a failback")
        request = {"action": "failover", "force": True} if found["refused"] else {"action": "failback"}
        answer = self.view.handler(self.primary, request)
        if answer.get("outcome") != "completed":
            raise RuntimeError(f"the failback before the scenario: {answer.get('outcome')} {answer.get('reasons')}")
        finished = float(answer["execution"].get("finished_at") or time.time())

        def seen_by_dr() -> bool:
            """DR judges the scenario by its own replica: the failback's control record must have reached it (or
            its minimum delay reads an older execution), and DR's readiness must be measured after it (its
            cluster is a replica again)."""
            control = self.view.control()
            measured = self.view.readiness_record(self.dr).get("measured_at_epoch")
            return (control.get("active_region") == self.primary
                    and float(control.get("last_finished_at") or 0) >= finished - 1
                    and isinstance(measured, int | float) and measured > finished)  # fmt: skip

        self.wait(seen_by_dr, deadline, f"{self.dr} to see the failback")
        how = "overriding the minimum delay" if found["refused"] else "a planned failback"
        self.notes.append(
            f"failed back to {self.primary} before the scenario ({how}; execution {answer['execution']['id']})"
        )

    def _produce(self, bodies: list[str], cut: int, deadline: float) -> Sent:
        hosts = {info["resources"]["ingress_domain"]: info["ingress"] for info in self.view.status["regions"].values()}
        self.resolver = Resolver(self.view.client(self.dr, "route53"), self.view.status["hosted_zone"], RECORD, hosts,
                                 ttl_seconds=60 / self.scale)  # fmt: skip

        def pace(n: int) -> None:
            if n >= cut:
                self._disrupt_once()

        on_accept = getattr(self.progress, "accepted", None)  # the live display counts what was accepted
        rate = self.options.rate * self.scale or None
        producers = Producers(self.resolver, self.options.producers, on_accept=on_accept, rate=rate,
                              restamp_share=self.restamp_share, lost_answer_share=self.lost_answer_share)  # fmt: skip
        return producers.send(bodies, deadline, pace)

    def _disrupt_once(self) -> None:
        with self._disrupting:
            if self.disruption.started is None:
                self.disruption.started = time.time()
                self.disrupt()

    def kill_primary(self) -> None:
        """The outage (or the partition): the primary dies (or is cut off); a timer brings it back."""
        assert self.outage_for is not None
        call(self.view.state_dir, "POST", f"/{self.cut_and_mend[0]}/{self.primary}")
        self.progress(f"{self.primary} is {self.words[0]} (for {self.outage_for:g} emulated s)")
        timer = threading.Timer(self.outage_for / self.scale, self._restore)
        timer.daemon = True
        timer.start()

    def _restore(self) -> None:
        try:
            body = None if self.backlog_pace is None else {"backlog_pace": self.backlog_pace}
            call(self.view.state_dir, "POST", f"/{self.cut_and_mend[1]}/{self.primary}", body=body)
            self.disruption.ended = time.time()
            self.progress(f"{self.primary} is {self.words[1]}")
        except Exception as exc:  # the waiting scenario reports it; a timer thread must not die silently
            self.disruption.error = f"bringing {self.primary} back failed: {exc}"
        finally:
            self.disruption.over.set()

    def wait(self, check: Callable[[], Any], deadline: float, what: str) -> Any:
        note = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            if time.monotonic() >= note:
                self.progress(f"waiting for {what}")
                note = time.monotonic() + 5.0
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}")

    def completed(self, action: str) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            done = self.view.executions(action, self.disruption.started or self.began)
            return next((e for e in done if e["outcome"] == "completed"), None)

        return check

    # ------------------------------------------------------------------------------------------ report
    def disruption_events(self) -> list[dict[str, Any]]:
        zero = self.disruption.started or self.began
        back = self.clocks.since(zero, self.disruption.ended)
        return [{"event": f"{self.primary} {self.words[0]}", "at": 0.0},
                {"event": f"{self.primary} {self.words[1]}", "at": back}]  # fmt: skip


class RegionLoss(Scenario):
    name = "region-loss"
    expected = ("one completed failover, nothing lost after reconciliation; with the durable ingress, what the "
                "dead primary had accepted is applied before it returns")  # fmt: skip
    default_outage = 300.0

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


class DrNotReady(Scenario):
    name = "dr-not-ready"
    expected = "the automatic failover refused and paged, nothing changed, nothing lost once the primary returns"
    default_outage = 240.0

    def __init__(self, view: TwinView, options: ScenarioOptions, progress: Progress | None = None) -> None:
        super().__init__(view, options, progress)
        self.pager: tuple[str, str] | None = None  # (queue URL, subscription ARN)
        self.paged: set[str] = set()  # execution ids the pager received
        self.paged_reasons: set[str] = set()  # the readiness reasons those pages gave
        self.paused = False

    def prepare(self, deadline: float) -> None:
        sqs, sns = self.view.client(self.dr, "sqs"), self.view.client(self.dr, "sns")
        url = sqs.create_queue(QueueName=f"tandem-drill-pager-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        topic = self.view.resource(self.dr, "alarm_topic_arn")
        self.pager = (url, sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"])
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
        refusal, the page, nothing lost) does not depend on it, and on the twin the stall's maximum stays in
        CloudWatch's minute for a real minute - an emulated hour. A later scenario on a running twin waits for
        DR's readiness in its preflight."""
        self._resume()

    def cleanup(self) -> None:
        self._resume()
        messages = [_json_object(p.get("Message")) for p in self._take_pages()]
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

    def _take_pages(self) -> list[dict[str, Any]]:
        """What the pager received (SNS's envelope around the handler's message), then the pager is removed."""
        if self.pager is None:
            return []
        url, subscription = self.pager
        sqs, found = self.view.client(self.dr, "sqs"), []
        while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            found += [json.loads(m["Body"]) for m in msgs]
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])  # fmt: skip
        self.view.client(self.dr, "sns").unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=url)
        self.pager = None
        return found

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
        return {**super().expectations(found), "returned_with_a_backlog": getattr(self, "backlog", 0) > 0,
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


KINDS: dict[str, type[Scenario]] = {
    k.name: k for k in (RegionLoss, Switchover, Blip, DrNotReady, Backlog, Partition, RetryStorm)
}


def _json_object(text: Any) -> dict[str, Any]:
    """A message body as a JSON object ({} for anything else: a page we cannot read names nothing)."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

"""The two-region scenarios: producers keep sending through the public name while something happens to the
primary region, and the data then says what it cost. This module is the machinery they share (producing,
disrupting through the twin's control API, settling, auditing, the report); the scenarios themselves, what
each does and expects, are in :mod:`tandem.drill.kinds`.

Figures (emulated seconds from the scenario's zero: the outage's start, or the switchover request):
- detection: zero -> the first failover record (an execution or a refusal) in DR;
- RTO: zero -> the first commit, by the region active at the end, of a transaction accepted after zero;
- RPO: what DR's ledger lacked at promotion - the transactions reconciliation re-applied from the journal -
  and the time from the oldest of them being accepted to the promotion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tandem.drill.audit import audit, snapshot
from tandem.drill.figures import OUTAGE_START, Figures, first_ran, step_end
from tandem.drill.observe import Clocks, TwinView
from tandem.drill.producers import Producers, Resolver, Sent
from tandem.drill.queues import take_dlq
from tandem.drill.rotation import MasterRotation
from tandem.drill.workload import Workload
from tandem.twin.control import call

RECORD = "txn.tandem.twin.internal"

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


#: how often a scenario's wait asks the twin (real seconds)
POLL_SECONDS = 0.5


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
    #: the disruption's request body (e.g. ``{"only": "database"}``: a grey failure) and the role it strikes
    cut_body: ClassVar[dict[str, Any] | None] = None
    struck_role: ClassVar[str] = "primary"
    #: after this share of the traffic sent before the disruption, the master secret rotates (None: never)
    rotate_master_at: ClassVar[float | None] = None

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
        self.rotation = MasterRotation(view, self.primary, progress=self.progress)

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
        if self.rotate_master_at is not None:
            invariants["master_secret_rotated_mid_traffic"] = self.rotation.held(active, deadline)
            self.notes.extend(self.rotation.notes)
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

        rotate_at = None if self.rotate_master_at is None else int(cut * self.rotate_master_at)

        def pace(n: int) -> None:
            if rotate_at is not None and n >= rotate_at:
                self.rotation.start_once()
            if n >= cut:
                self.rotation.finish_before(deadline)
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

    @property
    def struck(self) -> str:
        """The region the disruption strikes (the primary, but for a scenario of DR's own fault)."""
        return str(self.primary if self.struck_role == "primary" else self.dr)

    def kill_primary(self) -> None:
        """The outage (or the partition): the primary dies (or is cut off); a timer brings it back."""
        assert self.outage_for is not None
        call(self.view.state_dir, "POST", f"/{self.cut_and_mend[0]}/{self.struck}", body=self.cut_body)
        self.progress(f"{self.struck} is {self.words[0]} (for {self.outage_for:g} emulated s)")
        timer = threading.Timer(self.outage_for / self.scale, self._restore)
        timer.daemon = True
        timer.start()

    def _restore(self) -> None:
        try:
            body = None if self.backlog_pace is None else {"backlog_pace": self.backlog_pace}
            call(self.view.state_dir, "POST", f"/{self.cut_and_mend[1]}/{self.struck}", body=body)
            self.disruption.ended = time.time()
            self.progress(f"{self.struck} is {self.words[1]}")
        except Exception as exc:  # the waiting scenario reports it; a timer thread must not die silently
            self.disruption.error = f"bringing {self.struck} back failed: {exc}"
        finally:
            self.disruption.over.set()

    def wait(self, check: Callable[[], Any], deadline: float, what: str) -> Any:
        """Poll ``check`` every half second: most checks invoke a function of the twin (the handler's status),
        and at 10 a second the drill's own polling starved the twin it watches (its replication fell seconds
        behind). What a scenario reports is measured from the data, not from when a wait noticed it."""
        note = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            if time.monotonic() >= note:
                self.progress(f"waiting for {what}")
                note = time.monotonic() + 5.0
            time.sleep(POLL_SECONDS)
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
        return [{"event": f"{self.struck} {self.words[0]}", "at": 0.0},
                {"event": f"{self.struck} {self.words[1]}", "at": back}]  # fmt: skip

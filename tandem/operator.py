"""`tandem plan | failover | switchover | failback | executions`: the operator's side of the failover handler.

Every command invokes the failover handler of the region it concerns by **Lambda Invoke** (RequestResponse),
against the running twin or real AWS alike (regions and stacks as `tandem status` finds them: the twin's
control API, or samconfig.toml with credentials the boto3 way). The handler decides; this prints its answer
- the plan, the refusal reasons, or the execution's timeline as a table.

Which region: ``failover``/``switchover``/``plan`` activate the DR-role region, ``failback`` the primary-role
one (``--region`` overrides); ``executions`` asks the DR-role region first and the other if it does not answer;
``reconcile`` asks the DR-role region first and the other when the first says it is not the active one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tabulate import tabulate

from tandem.status import ClientSource, RegionTarget

ACTIONS = ("plan", "failover", "switchover", "failback", "executions", "reconcile")


class HandlerError(RuntimeError):
    """The handler could not be reached, or it failed (its error, in one line)."""


def handler_name(target: RegionTarget) -> str:
    if not target.app_stack:
        raise HandlerError(f"no app stack known for {target.region}: cannot name its failover handler")
    return f"{target.app_stack}-failover-handler"


def choose(action: str, targets: Sequence[RegionTarget], region: str | None = None) -> list[RegionTarget]:
    """The region(s) to invoke, in the order to try them."""
    by_role = {t.role: t for t in targets}
    if region is not None:
        chosen = [t for t in targets if t.region == region]
        if not chosen:
            raise ValueError(f"--region {region}: not one of {', '.join(t.region for t in targets)}")
        return chosen
    first = by_role.get("primary") if action == "failback" else by_role.get("dr")
    if first is None:
        raise ValueError("cannot tell the primary and DR regions apart (roles missing)")
    both = action in ("executions", "reconcile")
    return [first, *(t for t in targets if t is not first)] if both else [first]


def invoke(source: ClientSource, target: RegionTarget, request: Mapping[str, Any]) -> dict[str, Any]:
    """The handler's answer; HandlerError naming the region when it cannot be had."""
    name = handler_name(target)
    try:
        reply = source.client(target.region, "lambda").invoke(
            FunctionName=name, InvocationType="RequestResponse", Payload=json.dumps(request).encode()
        )
        payload = reply["Payload"].read()
    except (ClientError, BotoCoreError) as exc:
        raise HandlerError(f"{target.region}: {name} could not be invoked: {' '.join(str(exc).split())}") from None
    try:
        answer = json.loads(payload)
    except ValueError:
        raise HandlerError(f"{target.region}: {name} answered something that is not JSON") from None
    if reply.get("FunctionError"):
        message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
        raise HandlerError(f"{target.region}: {name} failed: {message}")
    if not isinstance(answer, dict):
        raise HandlerError(f"{target.region}: {name} answered {type(answer).__name__}, not an object")
    return answer


def run(
    action: str,
    source: ClientSource,
    targets: Sequence[RegionTarget],
    *,
    force: bool = False,
    region: str | None = None,
) -> dict[str, Any]:
    """Invoke the handler for ``action``; the answer carries the region that gave it."""
    if force and action not in ("failover", "switchover", "failback"):
        raise ValueError("--force applies to failover, switchover and failback only")
    request: dict[str, Any] = {"action": "status" if action == "executions" else action}
    if force:
        request["force"] = True
    errors = []
    chosen = choose(action, targets, region)
    for n, target in enumerate(chosen):
        try:
            answer = {"region": target.region, **invoke(source, target, request)}
        except HandlerError as exc:
            errors.append(str(exc))
            continue
        if "not_active" in answer.get("reasons", []) and n + 1 < len(chosen):
            continue  # reconcile runs in the active region: ask the other one
        return answer
    raise HandlerError("; ".join(errors))


# ---------------------------------------------------------------------------------------------- printing
def _time(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")[11:]


def timeline(execution: Mapping[str, Any]) -> str:
    """The steps of one execution as a table: when each ran, how long, its outcome and what it did."""
    rows = []
    for step in execution.get("steps", []):
        start, end = step.get("started_at"), step.get("finished_at")
        took = f"{end - start:.2f}" if isinstance(start, int | float) and isinstance(end, int | float) else "-"
        rows.append([step.get("name"), _time(start), _time(end), took, step.get("outcome"), step.get("detail", "")])
    return tabulate(rows, headers=["step", "started", "finished", "s", "outcome", "detail"], disable_numparse=True)


def executions_json(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`tandem executions --json`: the handler's execution records, newest first, in the documented shape."""
    keys = ("id", "trigger", "action", "mode", "outcome", "reasons", "started_at", "finished_at", "steps",
            "rpo_estimate_seconds")  # fmt: skip
    return [{k: e.get(k) for k in keys} | {"region": e.get("region")} for e in answer.get("executions", [])]


def describe(action: str, answer: Mapping[str, Any]) -> str:
    region = answer.get("region")
    if action == "executions":
        rows = [
            [_day(e.get("started_at")), e.get("id", "")[:8], e.get("trigger"), e.get("action"), e.get("mode"),
             e.get("outcome"), ", ".join(e.get("reasons", [])) or "-", _rto(e)]
            for e in answer.get("executions", [])
        ]  # fmt: skip
        control = answer.get("control", {})
        head = f"active region {control.get('active_region')} (epoch {control.get('epoch')}), as {region} holds it"
        table = tabulate(
            rows,
            headers=["started", "id", "trigger", "action", "mode", "outcome", "reasons", "s"],
            disable_numparse=True,
        )
        return f"{head}\n\n{table}" if rows else f"{head}\n\nno executions yet"
    if action == "plan":
        plan = answer.get("plan", {})
        verdict = "would run" if plan.get("allowed") else "would be REFUSED: " + ", ".join(plan.get("refused", []))
        lines = [f"plan for {plan.get('action')} to {plan.get('target_region')}: {verdict}",
                 f"  mode {plan.get('mode')}, RPO estimate {plan.get('rpo_estimate_seconds')} s",
                 f"  steps {', '.join(plan.get('steps', [])) or '-'}"]  # fmt: skip
        if plan.get("readiness_reasons"):
            lines.append(f"  readiness reasons {', '.join(plan['readiness_reasons'])}")
        return "\n".join(lines)
    outcome = answer.get("outcome")
    if action == "reconcile" and outcome != "refused":
        return reconciled(answer)
    if outcome == "refused":
        return f"{action} to {region} REFUSED: {', '.join(answer.get('reasons', []))}"
    execution = answer.get("execution") or {}
    head = f"{action} to {region}: {outcome} ({execution.get('mode')}, {_rto(execution)} s)"
    return f"{head}\n\n{timeline(execution)}"


def reconciled(answer: Mapping[str, Any]) -> str:
    """What a reconciliation found and did, part by part, then its timeline."""
    report, execution = answer.get("report", {}), answer.get("execution") or {}
    journal, stranded = report.get("journal", {}), report.get("stranded", {})
    lines = [
        f"reconcile in {answer.get('region')} (old region {report.get('old_region')}): {answer.get('outcome')}",
        f"  journal: {journal.get('lines', 0)} lines read, {journal.get('reapplied', 0)} were missing and are "
        f"re-applied, {journal.get('already_held', 0)} held already, {len(journal.get('could_not', []))} could not",
        f"  stranded: {stranded.get('moved', 0)} moved from the old region's queue",
    ]
    for region, dlq in report.get("dlq", {}).items():
        lines.append(f"  DLQ {region}: {dlq.get('redriven', 0)} redriven, {len(dlq.get('left', []))} left")
        lines += [f"    left {m.get('message_id')}: {m.get('reason')}" for m in dlq.get("left", [])[:10]]
    lines += [f"  could not {c.get('transaction_id')}: {c.get('reason')}" for c in journal.get("could_not", [])[:10]]
    return "\n".join(lines) + "\n\n" + timeline(execution)


def _day(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rto(execution: Mapping[str, Any]) -> str:
    start, end = execution.get("started_at"), execution.get("finished_at")
    return f"{end - start:.2f}" if isinstance(start, int | float) and isinstance(end, int | float) else "-"

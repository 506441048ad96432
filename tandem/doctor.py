"""`tandem doctor`: is automatic failover armed, now, in both regions?

It reads what the automatic failover path depends on, through the same APIs an operator would (boto3 against
AWS or the twin), and says for each thing that is not right what to do. Armed means: each app stack is
deployed and complete, with the inputs the path reads (``PeerHealthUrl`` = the peer's current ingress, automatic
failover enabled); the monitor's ``PeerHealthy``, peer-heartbeat and Aurora lag metrics are arriving (a lag is
only published when the monitor can read its database: DR's database is observable) and its own
``FailoverArmed`` says 1; the composite alarm has its actions on, its rule is enabled, targets the failover
handler and the handler's policy lets that rule invoke it; each region's processing (its SQS mapping)
agrees with the control record; Route53's health checks and the primary-active gate exist; both regions run
the same template; the processor's ``live`` alias runs the SnapStart setting its stack was given.

AWS's ARC Region switch evaluates its plans every 30 minutes; this runs whenever asked, and the monitor's
``FailoverArmed`` metric (with its alarm) keeps asking every minute between two runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tabulate import tabulate

from tandem.deploy.plan import PEER, Plan, stack_outputs
from tandem.status import ClientSource, one_line
from tandem.template import loads

WINDOW = 300.0  # seconds of metrics looked at: five monitor runs
NAMESPACE = "Tandem/Replication"  # the monitor's (replication_monitor.metrics)
GATE_ALARM = "tandem-primary-active-gate"  # infra_global's PrimaryActiveGateAlarm, in the DR region
COMPLETE = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


@dataclass(frozen=True)
class Finding:
    region: str  # a region, or "both"
    check: str
    ok: bool
    seen: str
    fix: str = ""


class _Findings(list[Finding]):
    def add(self, region: str, check: str, ok: bool, seen: str, fix: str) -> bool:
        self.append(Finding(region, check, ok, one_line(seen, 160), "" if ok else fix))
        return ok

    def read(self, region: str, check: str, call: Callable[[], Any]) -> Any:
        """``call()``'s answer; a finding (and None) when the region does not answer it."""
        try:
            return call()
        except ClientError as error:
            message = str(error.response.get("Error", {}).get("Message", error))
            if "does not exist" in message:  # a stack not deployed (yet)
                self.add(region, check, False, message, "run tandem deploy")
            else:
                self.add(
                    region, check, False, f"cannot read: {error}", "check access to the region, then run doctor again"
                )
            return None
        except (BotoCoreError, KeyError, IndexError, ValueError) as error:
            self.add(region, check, False, f"cannot read: {error}", "check access to the region, then run doctor again")
            return None


def examine(source: ClientSource, plan: Plan, view: Mapping[str, Any], now: float) -> list[Finding]:
    """Every finding, passing ones included. ``view``: `tandem status`'s (mappings and control records);
    ``now``: the target's clock (the twin's runs compressed)."""
    found = _Findings()
    templates = {}
    for role in PEER:
        templates[plan.regions[role]] = _app(
            source, plan, role, view["regions"].get(plan.regions[role], {}), now, found
        )
    _route53_and_gate(source, plan, found)
    hashes = set(templates.values())
    if None not in hashes:
        same = len(hashes) == 1
        found.add(
            "both",
            "same template",
            same,
            "one template in both regions" if same else "the templates differ",
            "run tandem deploy: it deploys one template.yaml to both regions",
        )
    return found


def armed(findings: list[Finding]) -> bool:
    return all(f.ok for f in findings)


def _app(
    source: ClientSource, plan: Plan, role: str, region_view: Mapping[str, Any], now: float, found: _Findings
) -> str | None:
    """The checks of one region; returns the hash of its app template (None when it could not be read)."""
    region, step = plan.regions[role], plan.step_of(role)
    cfn = source.client(region, "cloudformation")
    stacks = found.read(region, "app stack", lambda: cfn.describe_stacks(StackName=step.stack)["Stacks"])
    if not stacks:
        return None
    stack = stacks[0]
    if not found.add(
        region,
        "app stack",
        stack["StackStatus"] in COMPLETE,
        f"{step.stack} {stack['StackStatus']}",
        "let the update finish (or roll back), then run tandem deploy",
    ):
        return None
    params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    _inputs(source, plan, role, params, found)
    _trigger(source, region, step.stack, found)
    _metrics(source, region, now, found)
    _processing(region, region_view, found)
    _snapstart(source, region, params, outputs, found)
    body = found.read(region, "app stack", lambda: cfn.get_template(StackName=step.stack)["TemplateBody"])
    return None if body is None else _template_hash(body)


def _inputs(source: ClientSource, plan: Plan, role: str, params: Mapping[str, str], found: _Findings) -> None:
    region = plan.regions[role]
    peer = stack_outputs(source, plan.step_of(PEER[role])) or {}
    expected = f"{peer['IngressApiEndpoint'].rstrip('/')}/health" if "IngressApiEndpoint" in peer else None
    url = params.get("PeerHealthUrl", "")
    fix = "run tandem deploy: its last step sets PeerHealthUrl to the peer's IngressApiEndpoint /health"
    if not url:
        found.add(region, "peer health url", False, "PeerHealthUrl is empty: the peer's liveness is unknown", fix)
    elif expected is not None and url != expected:
        found.add(region, "peer health url", False, f"{url}, but the peer's ingress is {expected}", fix)
    else:
        found.add(region, "peer health url", True, url, fix)
    automatic = params.get("AutomaticFailover", "enabled")
    found.add(
        region,
        "automatic failover",
        automatic == "enabled",
        f"AutomaticFailover={automatic}",
        "deploy with AutomaticFailover=enabled (samconfig.toml), or fail over by hand: tandem failover",
    )


def _trigger(source: ClientSource, region: str, stack: str, found: _Findings) -> None:
    """The composite alarm, its rule, the rule's target and the target's permission for the rule."""
    name = f"{stack}-peer-region-impaired"
    cloudwatch, events = source.client(region, "cloudwatch"), source.client(region, "events")
    alarms = found.read(
        region,
        "composite alarm",
        lambda: cloudwatch.describe_alarms(AlarmNames=[name], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"],
    )
    if alarms is not None:
        on = bool(alarms) and bool(alarms[0].get("ActionsEnabled"))
        seen = "missing" if not alarms else f"{alarms[0].get('StateValue')}, actions {'on' if on else 'OFF'}"
        found.add(
            region,
            "composite alarm",
            on,
            f"{name}: {seen}",
            f"aws cloudwatch enable-alarm-actions --alarm-names {name} --region {region}",
        )
    rule = found.read(region, "failover rule", lambda: events.describe_rule(Name=name))
    if rule is None:
        return
    found.add(
        region,
        "failover rule",
        rule.get("State") == "ENABLED",
        f"{name}: {rule.get('State')}",
        f"aws events enable-rule --name {name} --region {region}",
    )
    targets = found.read(region, "rule target", lambda: events.list_targets_by_rule(Rule=name)["Targets"])
    handlers = [t["Arn"] for t in targets or [] if ":function:" in t["Arn"]]
    if targets is None or not found.add(
        region,
        "rule target",
        bool(handlers),
        ", ".join(t["Arn"] for t in targets) or "no target",
        "run tandem deploy (the rule's target is the failover handler)",
    ):
        return
    lam = source.client(region, "lambda")
    policy = found.read(
        region, "handler permission", lambda: json.loads(lam.get_policy(FunctionName=handlers[0])["Policy"])
    )
    if policy is not None:
        allowed = any(_allows(statement, rule["Arn"]) for statement in policy.get("Statement", []))
        found.add(
            region,
            "handler permission",
            allowed,
            f"{'the rule may' if allowed else 'nothing lets the rule'} invoke {handlers[0].rsplit(':', 1)[-1]}",
            "run tandem deploy (SAM gives the rule a lambda:InvokeFunction permission)",
        )


def _allows(statement: Mapping[str, Any], rule_arn: str) -> bool:
    principal = statement.get("Principal")
    service = principal.get("Service") if isinstance(principal, dict) else principal
    source_arn = (statement.get("Condition") or {}).get("ArnLike", {}).get("AWS:SourceArn")
    return statement.get("Effect") == "Allow" and service == "events.amazonaws.com" and source_arn in (None, rule_arn)


def _metrics(source: ClientSource, region: str, now: float, found: _Findings) -> None:
    """What the monitor publishes, over the last five runs."""
    cloudwatch = source.client(region, "cloudwatch")

    def datapoints(metric: str) -> list[dict[str, Any]] | None:
        points: list[dict[str, Any]] | None = found.read(
            region,
            metric,
            lambda: sorted(
                cloudwatch.get_metric_statistics(
                    Namespace=NAMESPACE,
                    MetricName=metric,
                    Dimensions=[{"Name": "Region", "Value": region}],
                    StartTime=datetime.fromtimestamp(now - WINDOW, UTC),
                    EndTime=datetime.fromtimestamp(now + 60, UTC),
                    Period=60,
                    Statistics=["Minimum"],
                )["Datapoints"],
                key=lambda d: d["Timestamp"],
            ),
        )
        return points

    monitor = "the replication monitor is not running or not publishing: check its schedule rule and its log group"
    for metric, what in (("PeerHealthy", "peer liveness"), ("PeerHeartbeatAgeSeconds", "peer heartbeat")):
        points = datapoints(metric)
        if points is not None:
            found.add(region, what, bool(points), f"{len(points)} minutes of {metric} in the last 5", monitor)
    lag = datapoints("AuroraLagSeconds")
    if lag is not None:
        found.add(
            region,
            "database observable",
            bool(lag),
            f"{len(lag)} minutes of AuroraLagSeconds in the last 5",
            "the monitor cannot read this region's ledger database (its reader endpoint): see its log",
        )
    verdict = datapoints("FailoverArmed")
    if verdict is not None:
        last = verdict[-1]["Minimum"] if verdict else None
        found.add(
            region,
            "monitor says armed",
            last == 1.0,
            "no FailoverArmed datapoint in the last 5 minutes" if last is None else f"FailoverArmed={last:g}",
            "read the monitor's last report (failover_armed.reasons) in its log: tandem invoke or CloudWatch",
        )


def _processing(region: str, view: Mapping[str, Any], found: _Findings) -> None:
    """The SQS mapping is on exactly where the control record says the active region is."""
    control = view.get("control")
    if not view or control is None:
        found.add(region, "processing", False, "the control record is unreadable here", "check the ledger table")
        return
    active = control.get("active_region") or (region if view.get("role") == "primary" else None)
    should, state = active == region, view.get("processing")
    ok = state is should
    seen = f"mapping {view.get('processing_state')}, control record: {active or 'the primary'} active"
    found.add(
        region,
        "processing",
        ok,
        seen,
        "the monitor fences a region within a run; if it persists: tandem status, then tandem reconcile",
    )


def _snapstart(
    source: ClientSource, region: str, params: Mapping[str, str], outputs: Mapping[str, str], found: _Findings
) -> None:
    alias = outputs.get("TransactionProcessorAliasArn", "")
    lam = source.client(region, "lambda")
    config = found.read(region, "snapstart", lambda: lam.get_function_configuration(FunctionName=alias))
    if config is None:
        return
    want = "PublishedVersions" if params.get("ProcessorSnapStart") == "enabled" else "None"
    has = str((config.get("SnapStart") or {}).get("ApplyOn", "None"))
    found.add(
        region,
        "snapstart",
        has == want,
        f"live = version {config.get('Version')}, SnapStart {has}",
        f"run tandem deploy: ProcessorVersionKey publishes a version with SnapStart {want}",
    )


def _route53_and_gate(source: ClientSource, plan: Plan, found: _Findings) -> None:
    step = plan.step_of("global-primary")
    primary, dr = plan.regions["primary"], plan.regions["dr"]
    resources = found.read(
        primary,
        "route53",
        lambda: source.client(primary, "cloudformation").list_stack_resources(StackName=step.stack)[
            "StackResourceSummaries"
        ],
    )
    if resources is not None:
        checks = [r for r in resources if r["ResourceType"] == "AWS::Route53::HealthCheck"]
        records = [r for r in resources if r["ResourceType"] == "AWS::Route53::RecordSet"]
        ok = len(checks) >= 4 and len(records) >= 2
        found.add(
            "both",
            "route53",
            ok,
            f"{len(checks)} health checks, {len(records)} failover records",
            "give HostedZoneId and RecordName in samconfig.toml [global-primary], then tandem deploy",
        )
    cloudwatch = source.client(dr, "cloudwatch")
    gate = found.read(dr, "gate", lambda: cloudwatch.describe_alarms(AlarmNames=[GATE_ALARM])["MetricAlarms"])
    if gate is not None:
        found.add(
            dr,
            "gate",
            bool(gate),
            f"{GATE_ALARM}: {gate[0]['StateValue'] if gate else 'missing'}",
            "run tandem deploy (global-secondary creates the primary-active gate)",
        )


def _template_hash(body: Any) -> str:
    """The app template without its code locations (each region's packages live in its own bucket)."""
    doc = body if isinstance(body, dict) else loads(str(body))
    for resource in (doc.get("Resources") or {}).values():
        (resource.get("Properties") or {}).pop("CodeUri", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def describe(findings: list[Finding]) -> str:
    rows = [(f.region, f.check, "ok" if f.ok else "NO", f.seen, f.fix) for f in findings]
    verdict = "ARMED: automatic failover is ready in both regions" if armed(findings) else "NOT ARMED"
    table = tabulate(rows, headers=["region", "check", "", "seen", "what to do"], tablefmt="simple")
    return f"{table}\n\n{verdict}"


def to_json(findings: list[Finding]) -> str:
    return json.dumps({"armed": armed(findings), "findings": [asdict(f) for f in findings]}, indent=2)

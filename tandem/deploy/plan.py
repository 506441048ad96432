"""The deploy order of both templates in both regions: one plan, for AWS and for the twin alike.

Eight steps, each a samconfig.toml config env deployed as one stack (the order the global template's header
explains): the DR region's keys first, then the primary's data layer, the DR cluster joining the global
database, the app in each region, Route53's failover records from both apps' ingress, then the step that
**arms automatic failover** - the primary's monitor probing DR's ingress (``PeerHealthUrl``, from DR's
``IngressApiEndpoint`` output; DR's monitor got the primary's at its own step) - and last DR's **witness**:
its failover handler learns Route53's endpoint check of the primary (``PeerEndpointHealthCheckId``), which it
asks before failing over a primary that does not answer from DR (the primary got DR's at the step before).

A step's parameters are samconfig's (plus a site's inputs: what the twin must give where an operator edits
samconfig) with what the plan computes from the stacks' outputs as they are *now* (DescribeStacks), never
hand-copied: the peers' key ARNs, the primary's secret, the ingress domains, the peer health URL and health
check, the peer region. An input whose stack does not exist yet is left at its default; so a second run computes every
step's final values at once and changes nothing. Before changing anything the plan refuses, in one line,
placeholders (REPLACE-ME), a hosted zone or certificate that is missing or does not exist, a parameter a
template does not declare, and an SSM parameter name that neither exists nor is published by a global stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from tandem.deploy.version import VERSION_KEY
from tandem.status import ClientSource
from tandem.template import SAMCONFIG, Template, TemplateError, load, samconfig_parameters

PLACEHOLDER = "REPLACE-ME"
ROLE = {"global-secondary": "dr", "global-primary": "primary", "primary": "primary", "dr": "dr"}
PEER = {"primary": "dr", "dr": "primary"}
ORDER: tuple[tuple[str, str], ...] = (
    ("global-secondary", "the DR region's keys, network, archive bucket and vault"),
    ("global-primary", "Aurora global and its writer, the global table, replication to DR"),
    ("global-secondary", "the DR cluster joins the global database; DR replicates back"),
    ("primary", "the app in the primary region"),
    ("dr", "the app in the DR region; its monitor probes the primary's ingress"),
    ("global-primary", "Route53's failover records and health checks, from both apps' ingress"),
    ("primary", "arms automatic failover: the primary's monitor probes DR's ingress"),
    ("dr", "DR's witness: Route53's checkers' view of the primary's ingress, asked before a failover"),
)
#: what the plan computes per env (samconfig's values for these, placeholders included, are not used)
COMPUTED: dict[str, tuple[str, ...]] = {
    "global-secondary": ("PeerRegion", "PeerDataKeyArn", "PrimaryLedgerDbSecretArn"),
    "global-primary": (
        "PeerRegion",
        "PeerDataKeyArn",
        "PrimaryIngressDomain",
        "DrIngressDomain",
        "PrimaryHealthCheckDomain",
        "DrHealthCheckDomain",
    ),
    "primary": ("PeerRegion", "PeerHealthUrl", "PeerEndpointHealthCheckId", VERSION_KEY),
    "dr": ("PeerRegion", "PeerHealthUrl", "PeerEndpointHealthCheckId", VERSION_KEY),
}
_SSM_TYPE = "AWS::SSM::Parameter::Value"
_SSM = "AWS::SSM::Parameter"


class PlanRefused(ValueError):
    """An input the plan cannot use: nothing was changed."""


class DeployError(RuntimeError):
    """A step failed: CloudFormation's (or SAM CLI's) reason."""


class Account(Protocol):
    """What the checks read: AWS or the twin, through boto3 clients."""

    requires_custom_domain: bool  # AWS: producers call the failover name over TLS

    def client(self, region: str, service: str) -> Any: ...


class Target(Account, Protocol):
    """Where the plan deploys: AWS (SAM CLI) or the twin. ``deploy`` runs one step (a dry run: creates its
    change set and leaves it unexecuted)."""

    def deploy(self, step: Step, parameters: dict[str, str], *, dry_run: bool) -> None: ...


@dataclass(frozen=True)
class Step:
    number: int
    env: str
    why: str
    region: str
    stack: str
    template: Path


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    regions: dict[str, str]  # role (primary, dr) -> region
    inputs: dict[str, dict[str, str]]  # env -> samconfig's values with the site's on top (before computing)
    config_file: Path = SAMCONFIG

    def step_of(self, env: str) -> Step:
        """The env's last step (its stack, region and template)."""
        return [s for s in self.steps if s.env == env][-1]


@dataclass
class Outcome:
    step: Step
    result: str  # created | updated | unchanged | previewed
    parameters: dict[str, str]
    shown: str = ""


def make_plan(
    config_file: Path = SAMCONFIG,
    *,
    regions: Mapping[str, str] | None = None,
    site: Mapping[str, Mapping[str, str]] | None = None,
    templates: Mapping[str, Path] | None = None,
) -> Plan:
    """The plan from samconfig.toml's four envs. ``regions`` (role -> region) replaces samconfig's regions (the
    twin's may differ); ``site`` adds inputs per env; ``templates`` (env -> path) replaces an env's template."""
    configs = {env: samconfig_parameters(env, config_file) for env in ROLE}
    if regions is None:
        regions = {role: configs[role].region for role in PEER}
        for env, role in ROLE.items():
            if configs[env].region != regions[role]:
                raise PlanRefused(
                    f"{config_file.name} [{env}] deploys to {configs[env].region}, but [{role}] to {regions[role]}: "
                    "a region's global stack and app stack go to the same region"
                )
    if regions["primary"] == regions["dr"]:
        raise PlanRefused(f"the primary and DR regions are the same ({regions['primary']})")
    steps = tuple(
        Step(n, env, why, regions[ROLE[env]], configs[env].stack_name,
             (templates or {}).get(env, configs[env].template_file))
        for n, (env, why) in enumerate(ORDER, 1)
    )  # fmt: skip
    inputs = {env: {**configs[env].parameters, **(site or {}).get(env, {})} for env in ROLE}
    return Plan(steps, dict(regions), inputs, config_file)


# ------------------------------------------------------------------------------------------------ values
Outputs = Callable[[str], dict[str, str] | None]


def parameters(plan: Plan, env: str, outputs: Outputs) -> dict[str, str]:
    """The env's parameters now: its inputs, then what the plan computes from the stacks' current outputs."""
    values = {k: v for k, v in plan.inputs[env].items() if k not in COMPUTED[env]}
    role = ROLE[env]
    values["PeerRegion"] = plan.regions[PEER[role]]
    if env == "global-secondary":
        primary = outputs("global-primary")
        if primary is not None:
            values["PeerDataKeyArn"] = _output(primary, "DataKeyArn", "global-primary")
            values["PrimaryLedgerDbSecretArn"] = _output(primary, "LedgerDbSecretArn", "global-primary")
    elif env == "global-primary":
        secondary = outputs("global-secondary")
        if secondary is not None:
            values["PeerDataKeyArn"] = _output(secondary, "DataKeyArn", "global-secondary")
        apps = {r: outputs(r) for r in PEER}
        if any(a is None for a in apps.values()):  # the DNS inputs go in together, once both apps exist
            values.pop("HostedZoneId", None)
            values.pop("RecordName", None)
        elif values.get("HostedZoneId"):
            for app, prefix in (("primary", "Primary"), ("dr", "Dr")):
                out = apps[app] or {}
                checked = _output(out, "IngressHealthCheckDomain", app)
                values[f"{prefix}IngressDomain"] = out.get("IngressRegionalDomain") or checked
                values[f"{prefix}HealthCheckDomain"] = checked
    else:
        peer = outputs(PEER[role])
        if peer is not None and peer.get("IngressApiEndpoint"):  # a peer stack of an older template has none yet
            values["PeerHealthUrl"] = peer["IngressApiEndpoint"].rstrip("/") + "/health"
        checks = outputs("global-primary") or {}  # Route53's checks exist once the DNS step has run
        witness = checks.get(f"{'Dr' if role == 'primary' else 'Primary'}EndpointHealthCheckId")
        if witness:
            values["PeerEndpointHealthCheckId"] = witness
    return values


def _output(outputs: Mapping[str, str], key: str, env: str) -> str:
    try:
        return outputs[key]
    except KeyError:
        raise PlanRefused(f"the {env} stack has no output {key!r}: deploy its current template first") from None


def stack_outputs(target: ClientSource, step: Step) -> dict[str, str] | None:
    """The stack's outputs through DescribeStacks; None while it does not exist (or was only previewed)."""
    cfn = target.client(step.region, "cloudformation")
    stack = describe_stack(cfn, step.stack)
    if stack is None or stack["StackStatus"] in ("REVIEW_IN_PROGRESS", "ROLLBACK_COMPLETE", "DELETE_COMPLETE"):
        return None
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def describe_stack(cfn: Any, name: str) -> dict[str, Any] | None:
    """DescribeStacks of one stack; None when it does not exist."""
    try:
        return dict(cfn.describe_stacks(StackName=name)["Stacks"][0])
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise


# ------------------------------------------------------------------------------------------------ refusals
def check(plan: Plan, target: Account) -> None:
    """Refuse, before any change, what would fail half-way or leave failover unarmed (PlanRefused, one line)."""
    where = plan.config_file.name
    declared = {env: _declared(plan.step_of(env).template) for env in ROLE}
    for env in ROLE:
        for key, value in plan.inputs[env].items():
            if key in COMPUTED[env]:
                continue
            if PLACEHOLDER in value:
                raise PlanRefused(f"{where} [{env}]: {key} is still {PLACEHOLDER} ({value}): give it its real value")
            if key not in declared[env]:
                raise PlanRefused(f"{where} [{env}]: {key} is not a parameter of {plan.step_of(env).template.name}")
    _check_zone(plan, target)
    for app in PEER:
        _check_certificate(plan, target, app)
    for app in PEER:
        _check_ssm_names(plan, target, app, declared[app])


def _declared(template: Path) -> dict[str, dict[str, Any]]:
    return dict(load(template).get("Parameters") or {})


def _check_zone(plan: Plan, target: Account) -> None:
    values = plan.inputs["global-primary"]
    zone, record = values.get("HostedZoneId", ""), values.get("RecordName", "")
    if not zone or not record:
        raise PlanRefused(
            f"{plan.config_file.name} [global-primary]: HostedZoneId and RecordName are not set: automatic failover "
            "moves traffic with Route53's failover record, in an existing public hosted zone"
        )
    try:
        found = target.client(plan.regions["primary"], "route53").get_hosted_zone(Id=zone)["HostedZone"]
    except ClientError as error:
        raise PlanRefused(f"hosted zone {zone} (HostedZoneId): {_reason(error)}") from None
    apex = str(found["Name"]).rstrip(".")
    if not record.endswith("." + apex):
        raise PlanRefused(f"RecordName {record} must be a name below the zone {apex} (a CNAME cannot be the apex)")


def _check_certificate(plan: Plan, target: Account, app: str) -> None:
    values, region = plan.inputs[app], plan.regions[app]
    name, arn = values.get("IngressDomainName", ""), values.get("IngressCertificateArn", "")
    if not name and not arn and not target.requires_custom_domain:
        return
    if not name or not arn:
        raise PlanRefused(
            f"{plan.config_file.name} [{app}]: IngressDomainName and IngressCertificateArn are not both set: "
            f"producers call the failover name over TLS, so API Gateway in {region} needs a certificate for it"
        )
    if name != plan.inputs["global-primary"].get("RecordName"):
        raise PlanRefused(
            f"[{app}] IngressDomainName {name} is not [global-primary] RecordName: producers call that name"
        )
    try:
        certificate = target.client(region, "acm").describe_certificate(CertificateArn=arn)["Certificate"]
    except ClientError as error:
        raise PlanRefused(f"[{app}] certificate {arn} in {region}: {_reason(error)}") from None
    if certificate.get("Status") != "ISSUED":
        raise PlanRefused(f"[{app}] certificate {arn} is {certificate.get('Status')}, not ISSUED")
    names = {certificate.get("DomainName"), *certificate.get("SubjectAlternativeNames", [])}
    wildcard = "*." + name.split(".", 1)[-1]
    if name not in names and wildcard not in names:
        raise PlanRefused(f"[{app}] certificate {arn} is for {', '.join(sorted(map(str, names)))}, not {name}")


def _check_ssm_names(plan: Plan, target: Account, app: str, declared: Mapping[str, Any]) -> None:
    """Every SSM parameter name the app reads exists now or is one its region's global stack publishes."""
    global_env = "global-primary" if app == "primary" else "global-secondary"
    published = _published_names(plan, global_env)
    ssm = target.client(plan.regions[app], "ssm")
    for key, spec in declared.items():
        name = plan.inputs[app].get(key, str(spec.get("Default", "")))
        if not str(spec.get("Type", "")).startswith(_SSM_TYPE) or not name or name in published:
            continue
        try:
            ssm.get_parameter(Name=name)
        except ClientError as error:
            raise PlanRefused(
                f"[{app}] {key}={name}: no such SSM parameter in {plan.regions[app]} and the {global_env} stack "
                f"does not publish it ({_reason(error)})"
            ) from None


def _published_names(plan: Plan, env: str) -> set[str]:
    step = plan.step_of(env)
    values = {**plan.inputs[env], "PeerRegion": plan.regions[PEER[ROLE[env]]]}
    template = Template(load(step.template), parameters=values, region=step.region, stack_name=step.stack)
    # every one the template declares: some exist only once a later step has given their inputs (the DR cluster)
    return {str(template.resolve(template.properties(k).get("Name"))) for k in template.resources_of_type(_SSM)}


def _reason(error: ClientError) -> str:
    err = error.response.get("Error", {})
    return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".rstrip(": ")


# ------------------------------------------------------------------------------------------------ running
def run(
    plan: Plan, target: Target, *, dry_run: bool = False, only: tuple[str, ...] = (), report: Callable[[str], None]
) -> list[Outcome]:
    """Check, then deploy each step in order (a dry run: each stack once, its change set created, not executed).

    ``only`` keeps the steps of those envs (the twin's ``redeploy`` of one app). ``report`` gets a line a step.
    """
    check(plan, target)
    steps = [s for s in plan.steps if not only or s.env in only]
    if dry_run:  # each stack once, with the values its last step would pass
        steps = [s for s in steps if s is plan.step_of(s.env)]
    done: list[Outcome] = []
    for step in steps:
        values = parameters(plan, step.env, lambda env: stack_outputs(target, plan.step_of(env)))
        cfn = target.client(step.region, "cloudformation")
        try:
            before = describe_stack(cfn, step.stack)
            target.deploy(step, values, dry_run=dry_run)
            after = describe_stack(cfn, step.stack)
            shown = _newest_change_set(cfn, step.stack) if dry_run else ""
        except (ClientError, BotoCoreError, TemplateError) as error:
            raise DeployError(f"step {step.number} ({step.env}, {step.stack} in {step.region}): {error}") from None
        outcome = Outcome(step, _result(before, after, dry_run), values, shown)
        done.append(outcome)
        report(describe(outcome))
    return done


def _newest_change_set(cfn: Any, stack: str) -> str:
    """The stack's newest change set, a line a change (DescribeChangeSet), or why it has none."""
    summaries = cfn.list_change_sets(StackName=stack).get("Summaries", [])
    if not summaries:
        return "  (no change set)"
    newest = max(summaries, key=lambda s: s["CreationTime"])
    change_set = cfn.describe_change_set(ChangeSetName=newest["ChangeSetId"])
    changes = [c["ResourceChange"] for c in change_set.get("Changes", [])]
    if not changes:
        return f"  no changes ({change_set.get('StatusReason') or change_set['Status']})"
    return "\n".join(
        f"  {c['Action']:<7} {c['LogicalResourceId']} ({c['ResourceType']})"
        + (f" replacement: {c['Replacement']}" if c.get("Replacement") in ("True", "Conditional") else "")
        for c in changes
    )


def _result(before: dict[str, Any] | None, after: dict[str, Any] | None, dry_run: bool) -> str:
    if dry_run:
        return "previewed"
    if before is None or before["StackStatus"] == "REVIEW_IN_PROGRESS":
        return "created"
    if after is not None and after.get("LastUpdatedTime") != before.get("LastUpdatedTime"):
        return "updated"
    return "unchanged"


def describe(outcome: Outcome) -> str:
    step = outcome.step
    line = f"{step.number}. {step.env:<16} {step.stack:<24} {step.region:<14} {outcome.result:<9}  {step.why}"
    return line + (f"\n{outcome.shown.rstrip()}" if outcome.shown.strip() else "")

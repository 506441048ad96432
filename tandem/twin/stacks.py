"""The twin deploys itself with `tandem deploy`'s plan (:mod:`tandem.deploy.plan`): both templates, both
regions, the same eight steps, each stack's inputs computed from the others' outputs, ending armed.

The steps go straight to each region's CloudFormation API (:mod:`tandem.twin.deployer` does what
``sam deploy`` does), not through SAM CLI each time; ``tandem deploy --target twin`` runs the same plan
through the real SAM CLI. What an operator writes into samconfig.toml the twin supplies as its site inputs
(:func:`site_inputs`): the hosted zone, and what differs on one machine - each database's port and the
local certificate authority its certificate is signed by, the peer's API endpoint, the clock's scale.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.deploy import plan as deploy_plan
from tandem.deploy.plan import Plan, Step
from tandem.template import APP_TEMPLATE, GLOBAL_TEMPLATE, samconfig_parameters
from tandem.twin.deployer import create_change_set, deploy_stack, deployed_stack
from tandem.twin.provision import Region, Stack

log = logging.getLogger(__name__)

#: The hosted zone the twin's failover records live in (no such zone exists anywhere but in the twin).
TWIN_ZONE = "tandem.twin.internal."
RECORD_NAME = f"txn.{TWIN_ZONE}".rstrip(".")
PLACEHOLDER = deploy_plan.PLACEHOLDER


class TwinStacks:
    """The plan's target inside the twin: each region's CloudFormation API, called directly."""

    requires_custom_domain = False  # the twin's ingress is loopback HTTP: no domain, no certificate

    def __init__(self, regions: dict[str, Region]) -> None:
        self.regions = regions

    def client(self, region: str, service: str) -> Any:
        return self.regions[region].client(service)

    def deploy(self, step: Step, parameters: dict[str, str], *, dry_run: bool) -> None:
        region = self.regions[step.region]
        if dry_run:
            create_change_set(region, step.stack, step.template, parameters)
        else:
            deploy_stack(region, step.stack, step.template, parameters)


@dataclass
class Deployed:
    """The twin's stacks, as the plan deployed them; stacks are read live (a later deploy updates them)."""

    plan: Plan
    target: TwinStacks
    hosted_zone: str
    site: dict[str, dict[str, str]]

    def app(self, region: str) -> Stack:
        return self._stack("primary" if region == self.plan.regions["primary"] else "dr")

    def global_stack(self, region: str) -> Stack:
        return self._stack("global-primary" if region == self.plan.regions["primary"] else "global-secondary")

    def _stack(self, env: str) -> Stack:
        step = self.plan.step_of(env)
        return deployed_stack(self.target.regions[step.region], step.stack)


def parameter_override(text: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` of ``sam deploy --parameter-overrides`` (the template checks the key and value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"{text!r} is not KEY=VALUE (a template parameter's name, then its value)")
    return key, value


def _values(env: str, **overrides: str) -> tuple[str, dict[str, str]]:
    """The env's stack name and parameter values, without the operator's placeholders, plus ``overrides``."""
    config = samconfig_parameters(env)
    values = {k: v for k, v in config.parameters.items() if PLACEHOLDER not in v}
    values.update(overrides)
    return config.stack_name, values


def site_inputs(
    primary: str,
    dr: str,
    *,
    hosted_zone: str,
    database_port: dict[str, int],
    database_ca: dict[str, str],
    api_urls: dict[str, str],
    clock_scale: float,
    app_overrides: dict[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """What the twin writes where an operator edits samconfig.toml, per env. On one machine: each region's
    database port and CA, the peer's API endpoint (AWS derives it from the region), the probe spacing, the
    peer-heartbeat and peer-ledger alarm thresholds, the replication metrics' period and reconciliation's wait
    for the old region's last batches on the twin clock (the functions sleep and measure ages in real time, so an
    emulated 10 s is 10/scale real seconds); ``app_overrides``: `twin up --parameter-overrides`."""
    site: dict[str, dict[str, str]] = {"global-primary": {"HostedZoneId": hosted_zone, "RecordName": RECORD_NAME}}
    for env, region, peer in (("primary", primary, dr), ("dr", dr, primary)):
        site[env] = {
            "LedgerDbPort": str(database_port[region]),
            "LedgerDbRootCert": database_ca[region],
            "ProbeIntervalSeconds": f"{10.0 / clock_scale:.6g}",
            "PeerHeartbeatAlarmSeconds": f"{40.0 / clock_scale:.6g}",
            "PeerLedgerFailingAlarmSeconds": f"{30.0 / clock_scale:.6g}",
            "ReconcileQuietSeconds": f"{35.0 / clock_scale:.6g}",
            # the replicators stamp their latency datapoints with real time: a minute's period is 1/scale of it
            "ReplicationMetricPeriodSeconds": str(max(1, round(60.0 / clock_scale))),
            "PeerAwsEndpointUrl": api_urls[peer],
            **(app_overrides or {}),
        }
    return site


def deploy_regions(
    primary: Region,
    dr: Region,
    *,
    database_port: dict[str, int],
    database_ca: dict[str, str],
    api_urls: dict[str, str],
    templates: tuple[Path, Path] = (GLOBAL_TEMPLATE, APP_TEMPLATE),
    clock_scale: float = 1.0,
    app_overrides: dict[str, str] | None = None,
) -> Deployed:
    """The hosted zone (an operator's prerequisite), then the plan's eight steps through each region's
    CloudFormation. ``templates`` (global, app) are the repository's; a test passes edited copies."""
    global_template, app_template = templates
    zone = primary.client("route53").create_hosted_zone(Name=TWIN_ZONE, CallerReference=str(uuid.uuid4()))
    hosted_zone = str(zone["HostedZone"]["Id"]).rsplit("/", 1)[-1]
    site = site_inputs(
        primary.name, dr.name, hosted_zone=hosted_zone, database_port=database_port, database_ca=database_ca,
        api_urls=api_urls, clock_scale=clock_scale, app_overrides=app_overrides,
    )  # fmt: skip
    plan = deploy_plan.make_plan(
        regions={"primary": primary.name, "dr": dr.name}, site=site,
        templates={"global-secondary": global_template, "global-primary": global_template,
                   "primary": app_template, "dr": app_template},
    )  # fmt: skip
    target = TwinStacks({primary.name: primary, dr.name: dr})
    deploy_plan.run(plan, target, report=log.info)
    return Deployed(plan, target, hosted_zone, site)


def redeploy_app(deployed: Deployed, region: Region) -> Stack:
    """``sam deploy --config-env <role>`` again: the plan's app steps for that region, values computed anew.

    Parameters typed ``AWS::SSM::Parameter::Value`` are read again, as CloudFormation reads them on every
    change set: a new value there is a change, and the stack is updated (see ``extensions.cloudformation``).
    """
    env = "primary" if region.name == deployed.plan.regions["primary"] else "dr"
    deploy_plan.run(deployed.plan, deployed.target, only=(env,), report=log.info)
    return deployed.app(region.name)


def deploy_one_region(region: Region, *, database_port: int, database_ca: str) -> Stack:
    """A region on its own (integration tests, the bench): its global stack without a peer, then its app."""
    name, params = _values("global-primary")
    deploy_stack(region, name, GLOBAL_TEMPLATE, params)
    app_name, app_params = _values("primary", LedgerDbPort=str(database_port), LedgerDbRootCert=database_ca)
    return deploy_stack(region, app_name, APP_TEMPLATE, app_params)


def cluster_of(stack: Stack) -> str:
    """The region's member of the global database, as its global stack created it."""
    return next(stack.ref(k) for k in stack.template.resources_of_type("AWS::RDS::DBCluster") if k in stack.physical)


def app_resources(app: Stack) -> dict[str, Any]:
    """What a client of the region needs, read from the app stack (parameters as deployed, physical ids)."""
    tpl = app.template
    return {
        "stack": app.name,
        "ledger_table": tpl.parameter("LedgerTableName"),
        "archive_bucket": tpl.parameter("ArchiveBucketName"),
        "queue_url": app.ref("TransactionQueue"),
        "dlq_url": app.ref("TransactionDLQ"),
        "db_secret_arn": tpl.parameter("LedgerDbSecretArn"),
        "alarm_topic_arn": app.ref("AlarmTopic"),
        "ingress_domain": app.outputs.get("IngressHealthCheckDomain"),  # what the failover record answers
        "durable_ingress": tpl.parameter("DurableIngress") == "enabled",
    }

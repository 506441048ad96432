"""The README's deploy order, as the twin runs it: both templates, two regions, samconfig's envs.

1. ``global-secondary`` in the DR region; 2. ``global-primary`` (Aurora global + writer, the global table,
replication to DR); 3. ``global-secondary`` again with the primary's key and secret (the DR cluster, DR -> primary
replication); 4./5. the app in each region (``primary``, ``dr``); 6. ``global-primary`` again with the
Route53 inputs taken from the apps' outputs. Parameter values are samconfig's; the twin supplies only what
the README says the operator must (placeholders marked REPLACE-ME: the peer's key between steps, the hosted
zone and ingress domains), plus what differs on one machine (the regions' names, each database's port and
the local certificate authority its certificate is signed by, where AWS's would be the RDS roots).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.template import APP_TEMPLATE, GLOBAL_TEMPLATE, samconfig_parameters
from tandem.twin.deployer import deploy_stack
from tandem.twin.provision import Region, Stack

#: The hosted zone the twin's failover records live in (no such zone exists anywhere but in the twin).
TWIN_ZONE = "tandem.twin.internal."
PLACEHOLDER = "REPLACE-ME"


@dataclass
class Deployed:
    """Every stack of the twin, as the deploy order left them."""

    global_stacks: dict[str, Stack] = field(default_factory=dict)  # region -> its global stack
    apps: dict[str, Stack] = field(default_factory=dict)  # region -> its app stack
    hosted_zone: str = ""
    app_template: Path = APP_TEMPLATE
    app_parameters: dict[str, dict[str, str]] = field(default_factory=dict)  # region -> what its deploy passed


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


def deploy_regions(
    primary: Region,
    dr: Region,
    *,
    database_port: dict[str, int],
    database_ca: dict[str, str],
    templates: tuple[Path, Path] = (GLOBAL_TEMPLATE, APP_TEMPLATE),
    ingress_urls: dict[str, str] | None = None,
    api_urls: dict[str, str] | None = None,
    clock_scale: float = 1.0,
    app_overrides: dict[str, str] | None = None,
) -> Deployed:
    """Run the six steps through each region's CloudFormation (the twin's provider serves the functions and
    the ingress); ``app_overrides`` are the operator's ``--parameter-overrides`` for both app stacks.

    ``templates`` (global, app) are the repository's; a test passes edited copies to see the twin follow.
    """
    global_template, app_template = templates
    out = Deployed(app_template=app_template)
    name, params = _values("global-secondary", PeerRegion=primary.name)
    secondary = deploy_stack(dr, name, global_template, params)
    gp_name, gp_params = _values("global-primary", PeerRegion=dr.name, PeerDataKeyArn=_output(secondary, "DataKeyArn"))
    global_primary = deploy_stack(primary, gp_name, global_template, gp_params)
    params.update(
        PeerDataKeyArn=_output(global_primary, "DataKeyArn"),
        PrimaryLedgerDbSecretArn=_output(global_primary, "LedgerDbSecretArn"),
    )
    out.global_stacks[dr.name] = deploy_stack(dr, name, global_template, params)
    for env, region in (("primary", primary), ("dr", dr)):
        peer = dr if region is primary else primary
        app_name, app_params = _values(
            env,
            LedgerDbPort=str(database_port[region.name]),
            LedgerDbRootCert=database_ca[region.name],
            **_one_machine_overrides(peer.name, ingress_urls, api_urls, clock_scale),
            **(app_overrides or {}),
        )
        out.app_parameters[region.name] = app_params
        out.apps[region.name] = deploy_stack(region, app_name, app_template, app_params)

    zone = primary.client("route53").create_hosted_zone(Name=TWIN_ZONE, CallerReference=str(uuid.uuid4()))
    out.hosted_zone = str(zone["HostedZone"]["Id"]).rsplit("/", 1)[-1]
    ingress = {r: _output(s, "IngressHealthCheckDomain") for r, s in out.apps.items()}
    gp_params.update(
        HostedZoneId=out.hosted_zone, RecordName=f"txn.{TWIN_ZONE}".rstrip("."),
        PrimaryIngressDomain=ingress[primary.name], DrIngressDomain=ingress[dr.name],
        PrimaryHealthCheckDomain=ingress[primary.name], DrHealthCheckDomain=ingress[dr.name],
    )  # fmt: skip
    out.global_stacks[primary.name] = deploy_stack(primary, gp_name, global_template, gp_params)
    return out


def redeploy_app(deployed: Deployed, region: Region) -> Stack:
    """``sam deploy --config-env <role>`` again: the same template and parameters over the deployed stack.

    Parameters typed ``AWS::SSM::Parameter::Value`` are read again, as CloudFormation reads them on every
    change set: a new value there is a change, and the stack is updated (see ``extensions.cloudformation``).
    """
    app = deployed.apps[region.name]
    stack = deploy_stack(region, app.name, deployed.app_template, deployed.app_parameters[region.name])
    deployed.apps[region.name] = stack
    return stack


def deploy_one_region(region: Region, *, database_port: int, database_ca: str) -> Stack:
    """A region on its own (integration tests, the bench): its global stack without a peer, then its app."""
    name, params = _values("global-primary")
    deploy_stack(region, name, GLOBAL_TEMPLATE, params)
    app_name, app_params = _values("primary", LedgerDbPort=str(database_port), LedgerDbRootCert=database_ca)
    return deploy_stack(region, app_name, APP_TEMPLATE, app_params)


def _one_machine_overrides(
    peer: str, ingress_urls: dict[str, str] | None, api_urls: dict[str, str] | None, scale: float
) -> dict[str, str]:
    """What differs on one machine: the peer's ingress (its loopback port, which the operator would give as
    the peer's execute-api URL) and its API endpoint (AWS derives it from the region); the probe spacing
    and the peer-heartbeat alarm threshold on the twin clock (the monitor sleeps and measures ages in real
    time, so an emulated 10 s is 10/scale real seconds)."""
    values: dict[str, str] = {}
    if ingress_urls is not None:
        values |= {"PeerHealthUrl": f"{ingress_urls[peer]}/health", "ProbeIntervalSeconds": f"{10.0 / scale:.6g}"}
        values |= {"PeerHeartbeatAlarmSeconds": f"{40.0 / scale:.6g}"}
    if api_urls is not None:
        values["PeerAwsEndpointUrl"] = api_urls[peer]
    return values


def _output(stack: Stack, key: str) -> Any:
    try:
        return stack.outputs[key]
    except KeyError:
        raise RuntimeError(f"stack {stack.name} in {stack.region} has no output {key!r}") from None

"""Lambda entry point of the monitor's Aurora observer: the one part that runs in the VPC.

The monitor itself must reach the peer region's public ingress (its /health probe), which a VPC without a
NAT gateway cannot; the database is reachable only from inside the VPC. So the monitor invokes this small
function once per run: it opens the ledger connection (TLS, Secrets Manager credentials, through the VPC's
Secrets Manager endpoint), reads ``aurora_global_db_status()``, writes the heartbeat row when this region's
cluster is the writer or reads the writer's when it is not, and answers the observation as JSON.
"""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from tandem_core.aurora_observer import LedgerAurora, ledger_aurora_from_env
from tandem_core.settings import AwsSettings

logger = Logger(service="replication_monitor_aurora")


@functools.cache
def build_observer() -> LedgerAurora:
    return ledger_aurora_from_env(AwsSettings.from_env())


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001 - no input
    if not isinstance(event, dict):
        raise ValueError(f"the Aurora observer takes a JSON object, not {type(event).__name__}")
    observation = build_observer().observe()
    if not observation.reachable:
        logger.warning("ledger database unreachable", extra={"error": observation.error})
    return observation.as_dict()

"""Lambda entry point behind ``GET /health`` (HTTP API, payload format 2.0): 200 when the region can accept
work, 503 when it cannot. Route53's endpoint health check reads only the status code."""

from __future__ import annotations

import functools
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from tandem_core.clients import client_for
from tandem_core.health import region_health
from tandem_core.settings import AwsSettings, HealthSettings

logger = Logger()


@functools.cache
def _settings() -> tuple[AwsSettings, HealthSettings]:
    return AwsSettings.from_env(), HealthSettings.from_env()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001 - GET only
    aws, settings = _settings()
    report = region_health(
        client_for("sqs", aws), client_for("dynamodb", aws), settings.queue_url, settings.ledger_table
    )
    body = report.as_dict(aws.region, settings.region_role)
    if not report.healthy:
        logger.warning("region cannot accept work", extra=body)
    return {
        "statusCode": 200 if report.healthy else 503,
        "headers": {"content-type": "application/json", "cache-control": "no-store"},
        "body": json.dumps(body, sort_keys=True),
    }

"""CloudFormation custom resource ``LedgerSchema``: the deploy's schema step (see ledger_schema.deploy).

Create and Update run the step; Delete does nothing (a stack never drops a ledger). CloudFormation always
gets an answer - SUCCESS with the schema version, or FAILED with the reason, which it shows as the stack
event's status reason - because without one it waits an hour for the resource.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ledger_schema.deploy import deploy_schema
from tandem_core.database import LedgerConnector, credentials_for
from tandem_core.settings import AwsSettings, LedgerDbSettings
from tandem_core.validation import describe

logger = Logger(service="ledger_schema")

#: how long a global secondary's step waits for the writer region's migrations to replicate
REPLICATION_WAIT_SECONDS = 120.0
#: what the step leaves of the function's time to answer CloudFormation whatever happened
ANSWER_SECONDS = 15.0


class SchemaRequest(BaseModel):
    """The custom resource request, as much of it as the step needs (ResponseURL kept byte for byte: signed)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    request_type: Literal["Create", "Update", "Delete"] = Field(alias="RequestType")
    response_url: str = Field(alias="ResponseURL", pattern=r"^https?://")
    stack_id: str = Field(alias="StackId", min_length=1)
    request_id: str = Field(alias="RequestId", min_length=1)
    logical_resource_id: str = Field(alias="LogicalResourceId", min_length=1)
    physical_resource_id: str | None = Field(default=None, alias="PhysicalResourceId")
    resource_properties: dict[str, Any] = Field(default_factory=dict, alias="ResourceProperties")


class SchemaProperties(BaseModel):
    """The resource's properties: the master secret travels with the request, so no function's environment
    names it (the step's IAM statement is the only grant to read it)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    master_secret_arn: str = Field(alias="MasterSecretArn", pattern=r"^arn:aws[a-z-]*:secretsmanager:")


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request = SchemaRequest.model_validate(event)
    except ValidationError as exc:
        raise ValueError(f"not a CloudFormation custom resource request: {describe(exc, 'event')}") from None
    physical = request.physical_resource_id or f"{request.logical_resource_id}-{request.stack_id.rsplit('/', 1)[-1]}"
    try:
        budget = min(REPLICATION_WAIT_SECONDS, context.get_remaining_time_in_millis() / 1000 - ANSWER_SECONDS)
        data = {} if request.request_type == "Delete" else _run_step(request, max(0.0, budget))
        answer = {"Status": "SUCCESS", "Reason": "", "Data": data}
    except Exception as exc:  # every failure becomes the stack event's reason, and the update rolls back
        logger.exception("the schema step failed")
        answer = {"Status": "FAILED", "Reason": f"{type(exc).__name__}: {exc}"[:1000], "Data": {}}
    _respond(request, physical, answer)
    return {"PhysicalResourceId": physical, **answer}


def _run_step(request: SchemaRequest, wait_seconds: float) -> dict[str, str]:
    try:
        secret = SchemaProperties.model_validate(request.resource_properties).master_secret_arn
    except ValidationError as exc:
        raise ValueError(f"LedgerSchema's properties: {describe(exc, 'ResourceProperties')}") from None
    aws = AwsSettings.from_env()
    db = LedgerDbSettings.from_env({**os.environ, "LEDGER_DB_AUTH": "secret", "LEDGER_DB_SECRET_ARN": secret})
    reader_db = db.model_copy(update={"host": db.reader_host or db.host})
    report = deploy_schema(
        LedgerConnector(reader_db, credentials_for(reader_db, aws)),
        LedgerConnector(db, credentials_for(db, aws)),
        aws.region,
        wait_seconds=wait_seconds,
    )
    logger.info("schema step done", extra={"role": report.role, "version": report.version, "applied": report.applied})
    return {"SchemaVersion": str(report.version), "Role": report.role, "Applied": ",".join(map(str, report.applied))}


def _respond(request: SchemaRequest, physical: str, answer: dict[str, Any]) -> None:
    """PUT the answer to the presigned ResponseURL, as CloudFormation's cfn-response does (no content type)."""
    body = json.dumps({
        **answer, "PhysicalResourceId": physical, "StackId": request.stack_id, "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
    }).encode()  # fmt: skip
    headers = {"Content-Type": "", "Content-Length": str(len(body))}
    put = urllib.request.Request(request.response_url, data=body, method="PUT", headers=headers)  # noqa: S310 - http(s) only
    with urllib.request.urlopen(put, timeout=10) as response:  # noqa: S310 - CloudFormation's presigned URL
        response.read()

"""Lambda entry point behind ``POST /transactions`` when the durable ingress is on (HTTP API, payload 2.0).

Thin: the body goes to :class:`tandem_core.intake.Intake` - recorded in the other region's replica of the
global table (this region's when that one does not answer), then queued - and the answer is the one the direct
queue integration gives (200 with the queue's message id), so producers see no difference. A body no queue
would take is refused with 400/413 before anything is recorded; a failure to record or queue answers 503, and
the producer's retry is safe (the same transaction is a duplicate). ``AcceptedNotInPeer`` counts the messages
accepted while the other region did not answer: durable there only once replication catches up.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from tandem_core.clients import client_for, peer_client
from tandem_core.intake import AcceptedLog, Intake, RejectedBody
from tandem_core.settings import AwsSettings, IntakeSettings

logger = Logger()
metrics = Metrics(namespace="Tandem/Ingress")


@functools.cache
def build_intake() -> Intake:
    aws, s = AwsSettings.from_env(), IntakeSettings.from_env()
    log = AcceptedLog(client_for("dynamodb", aws), s.ledger_table, s.accepted_ttl_seconds)
    peer = None
    if s.peer_region:
        ddb = peer_client("dynamodb", s.peer_region, s.peer_endpoint_url, s.peer_timeout_seconds)
        peer = AcceptedLog(ddb, s.ledger_table, s.accepted_ttl_seconds)
    return Intake(log, peer, client_for("sqs", aws), s.queue_url, aws.region)


def body_of(event: Any) -> str | None:
    """The request body as text (API Gateway base64-encodes a body it does not take for text)."""
    if not isinstance(event, dict):
        raise RejectedBody(400, "not an HTTP API request")
    body = event.get("body")
    if body is None or not event.get("isBase64Encoded"):
        return body if isinstance(body, str) or body is None else str(body)
    try:
        return base64.b64decode(body, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise RejectedBody(400, "the message body is not UTF-8 text") from None


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001 - Powertools reads it
    request_id = str((event.get("requestContext") or {}).get("requestId") or uuid.uuid4())
    try:
        accepted = build_intake().accept(body_of(event), request_id)
    except RejectedBody as exc:
        return _answer(exc.status, {"message": str(exc)})
    except (ClientError, BotoCoreError) as exc:
        logger.warning("not accepted", extra={"request_id": request_id, "error": f"{type(exc).__name__}: {exc}"})
        return _answer(503, {"message": "not accepted: try again"})
    if not accepted.durable_in_peer:
        logger.warning("accepted while the other region did not answer", extra={"request_id": request_id})
        metrics.add_metric(name="AcceptedNotInPeer", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()  # only then: the usual answer writes no metric line at all
    return _answer(200, {"SendMessageResponse": {"SendMessageResult": {"MessageId": accepted.message_id}}})

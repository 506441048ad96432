"""Lambda entry point: SQS batch in, partial batch response out.

Thin by design: build the processor once per execution environment (settings, clients, DB connection
are reused across invocations), hand it the batch, and turn its per-message results into SQS's partial
batch response, Powertools logs and metrics.

Cold start (:mod:`tandem_core.coldstart`): the cyclic collector is off from the first line to the end of this
module and while :func:`build_processor` runs, and what they built is frozen (~30 ms of a ~315 ms cold start);
the X-Ray SDK is imported only when tracing is on (~100 ms).
"""

from __future__ import annotations

import gc

gc.disable()  # until the end of this module: see tandem_core.coldstart

import os
import random
import ssl
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from snapshot_restore_py import register_after_restore, register_before_snapshot

from tandem_core import coldstart
from tandem_core.archive import Journal
from tandem_core.clients import client_for
from tandem_core.control import ControlStore, primary_region
from tandem_core.database import LedgerConnector, credentials_for
from tandem_core.fencing import Fence, Fenced
from tandem_core.ledger import Ledger
from tandem_core.settings import AwsSettings, LedgerDbSettings, ProcessorSettings
from tandem_core.status import StatusStore
from transaction_processor.processing import BatchResult, Processor, messages_from_event, replay_messages

logger = Logger()
metrics = Metrics()
tracer = coldstart.tracer()


class _Environment:
    """What an execution environment builds once. With SnapStart it is built before the snapshot (without a
    connection: none survives a restore) and every copy restored from it starts with it."""

    processor: Processor | None = None
    ledger: Ledger | None = None


_environment = _Environment()


def build_processor(*, connect_ahead: bool = True) -> Processor:
    """Everything the processor needs, built once per execution environment from the environment.

    ``connect_ahead``: the ledger connection starts opening on a background thread before the DynamoDB and S3
    clients are built, so its waits (the secret, the login, the schema check) overlap that work (~8 ms)."""
    if _environment.processor is None:
        with coldstart.lasting():
            _environment.processor, _environment.ledger = _build_processor(connect_ahead)
    return _environment.processor


def _build_processor(connect_ahead: bool) -> tuple[Processor, Ledger]:
    aws = AwsSettings.from_env()
    settings = ProcessorSettings.from_env()
    db = LedgerDbSettings.from_env()
    ledger = Ledger(LedgerConnector(db, credentials_for(db, aws)))
    if connect_ahead:
        ledger.open_ahead()
    dynamodb = client_for("dynamodb", aws)
    fence = None
    if settings.peer_region is not None:
        primary = primary_region(aws.region, settings.region_role, settings.peer_region)
        control = ControlStore(dynamodb, settings.ledger_table, primary)
        fence = Fence(control, aws.region, settings.fence_max_age_seconds)
    processor = Processor(
        ledger=ledger,
        journal=Journal(client_for("s3", aws), settings.archive_bucket),
        status=StatusStore(dynamodb, settings.ledger_table),
        region=aws.region,
        fence=fence,
    )
    return processor, ledger


def _before_snapshot() -> None:
    """SnapStart, once per published version: the snapshot holds everything init can build - settings read and
    checked, the clients and their service models - but no connection, no thread, nothing read yet (the
    fence's control record, the secret: each restored copy reads its own, when it needs it)."""
    build_processor(connect_ahead=False)
    logger.info("snapshot: processor built, nothing connected")


def _after_restore() -> None:
    """Each copy restored from the snapshot: randomness of its own - every copy starts from one state of
    Python's generator (botocore's retry jitter) and of OpenSSL's (TLS) - then the ledger connection on its way.
    Credentials need nothing here: botocore's provider chain refreshes what expires."""
    random.seed()
    ssl.RAND_add(os.urandom(32), 32.0)
    build_processor()
    if _environment.ledger is not None:
        _environment.ledger.open_ahead()
    logger.info("restored: randomness reseeded, ledger connection opening")


register_before_snapshot(_before_snapshot)  # run only where SnapStart is on (Lambda's runtime, the twin)
register_after_restore(_after_restore)


def _partial_response(result: BatchResult) -> dict[str, Any]:
    """SQS's partial batch response: each failed message goes back to its queue (and to the DLQ after
    maxReceiveCount), logged with its reason. Built here rather than by Powertools' BatchProcessor: the
    outcome of every message is known already, and importing the batch utility (and every event data class
    it pulls in) cost ~60 ms of each cold start for what one loop does."""
    failures: list[dict[str, str]] = []
    for message_id, outcome in result.results.items():
        if outcome.failed:
            logger.set_correlation_id(message_id)
            logger.warning(
                "message rejected",
                extra={"reason": outcome.reason, "outcome": outcome.outcome, "transaction_id": outcome.transaction_id},
            )
            failures.append({"itemIdentifier": message_id})
    logger.set_correlation_id(None)
    if result.status_replaced:  # the ledger's truth replaced them; what they said is kept in the item
        logger.warning(
            "status items replaced by what the ledger holds", extra={"transaction_ids": result.status_replaced}
        )
    return {"batchItemFailures": failures}


def replay(event: dict[str, Any]) -> dict[str, Any]:
    """Reconciliation's request (the failover handler's Lambda Invoke): journal lines through the same path.

    ``Fenced`` propagates: a region that is not active must not replay, and the caller sees why."""
    messages = replay_messages(event)
    result = build_processor().process(messages)
    metrics.add_metric(name="TransactionsReplayed", unit=MetricUnit.Count, value=result.count("committed"))
    logger.info("replay processed", extra={"records": len(messages), "committed": result.count("committed"),
                                           "duplicates": result.count("duplicate")})  # fmt: skip
    return {
        "replayed": [
            {"message_id": mid, "outcome": r.outcome, "reason": r.reason, "transaction_id": r.transaction_id}
            for mid, r in result.results.items()
        ],
        "archive_key": result.archive_key,
        "status_replaced": result.status_replaced,
    }


@logger.inject_lambda_context(clear_state=True)
@coldstart.traced(tracer)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001 - the decorators read it
    if isinstance(event, dict) and "replay" in event:
        return replay(event)
    started = time.perf_counter()
    messages = messages_from_event(event)  # ValueError naming the malformed record: the invoker's error
    if not messages:
        return {"batchItemFailures": []}  # nothing to do, and nothing for Powertools to misread
    try:
        result = build_processor().process(messages)
    except Fenced as exc:  # every message back to the queue, untouched; nothing was written
        logger.warning("batch refused", extra={"reason": str(exc), "records": len(messages)})
        metrics.add_metric(name="TransactionsFenced", unit=MetricUnit.Count, value=len(messages))
        return {"batchItemFailures": [{"itemIdentifier": m.message_id} for m in messages]}

    response = _partial_response(result)
    metrics.add_metric(name="TransactionsCommitted", unit=MetricUnit.Count, value=result.count("committed"))
    metrics.add_metric(name="TransactionsDuplicate", unit=MetricUnit.Count, value=result.count("duplicate"))
    metrics.add_metric(name="TransactionsRejected", unit=MetricUnit.Count, value=len(result.failures))
    metrics.add_metric(name="BatchLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000)
    logger.info(
        "batch processed",
        extra={
            "records": len(messages),
            "committed": result.count("committed"),
            "duplicates": result.count("duplicate"),
            "rejected": len(result.failures),
            "archive_key": result.archive_key,
        },
    )
    return response


coldstart.end_of_init()

"""Lambda entry point of the failover handler (both regions; the alarm's rule and operators invoke it).

Thin: parse the request (a bad one fails in one line before anything is read), run the service built once
per execution environment, log and return its answer. The peer's clients have short timeouts and a single
attempt (DESIGN §4 rule 1): a dead peer costs seconds, never the run.
"""

from __future__ import annotations

import gc

gc.disable()  # until the end of this module (its cold start): see tandem_core.coldstart

import functools
import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from failover_handler.events import parse_request
from failover_handler.history import ExecutionLog
from failover_handler.metrics import EmfExecutionMetrics
from failover_handler.reconcile import JournalReplay, OldRegion, Reconciler, processor_invoker
from failover_handler.runbook import RegionApis, Runbook
from failover_handler.service import Facts, FailoverService, no_witness
from failover_handler.witness import Route53Witness
from replication_monitor.probe import HttpProber
from tandem_core import coldstart
from tandem_core.clients import client_for, peer_client
from tandem_core.control import ControlStore, primary_region
from tandem_core.fencing import ProcessingSwitch
from tandem_core.forwarding import DlqRedrive, QueueForwarder
from tandem_core.intake import AcceptedLog, AcceptedReplay
from tandem_core.readiness import read_readiness
from tandem_core.settings import AwsSettings, ConfigurationError, FailoverSettings

logger = Logger(service="failover_handler")
tracer = coldstart.tracer(service="failover_handler")
SERVICES = ("rds", "lambda", "cloudwatch", "sns", "ssm")  # in RegionApis order


def peer_reachable(settings: FailoverSettings, peer: RegionApis) -> bool:
    """The peer answers now: its ingress /health (when configured) and its RDS API, each within the timeout."""
    if (
        settings.peer_health_url
        and not HttpProber().probe(settings.peer_health_url, settings.peer_timeout_seconds).healthy
    ):
        return False
    try:
        peer.rds.describe_global_clusters(GlobalClusterIdentifier=settings.global_cluster_id)
    except (ClientError, BotoCoreError):
        return False
    return True


def peer_ledger_failing(dynamodb: Any, table: str, region: str, peer_region: str, stale_after: float) -> bool:
    """The peer says, in a heartbeat our replica holds that is not stale, that its ledger cannot commit."""
    from tandem_core.heartbeat import ControlItems  # only when asked

    try:
        beat = ControlItems(dynamodb, table, region, peer_region).read_peer_heartbeat()
    except (ClientError, BotoCoreError):
        return False  # unread: no word from the peer either way (readiness judges our own table)
    return beat is not None and beat.ledger_failing(time.time(), stale_after) is True


@functools.cache
def build_service() -> FailoverService:
    with coldstart.lasting():  # no cyclic collection while it is built (tandem_core.coldstart)
        return _build_service()


def _build_service() -> FailoverService:
    aws = AwsSettings.from_env()
    s = FailoverSettings.from_env()
    if s.peer_region == aws.region:
        raise ConfigurationError(f"PEER_REGION must be the other region, not this one ({aws.region})")
    own = RegionApis(aws.region, *(client_for(name, aws) for name in SERVICES))
    peer = RegionApis(
        s.peer_region,
        *(peer_client(name, s.peer_region, s.peer_endpoint_url, s.peer_timeout_seconds) for name in SERVICES),
    )
    db = client_for("dynamodb", aws)
    primary = primary_region(aws.region, s.region_role, s.peer_region)
    accepted = None
    if s.durable_ingress == "enabled":
        accepted = AcceptedReplay(AcceptedLog(db, s.ledger_table), client_for("sqs", aws), s.queue_url,
                                  window_seconds=s.reconcile_lookback_seconds)  # fmt: skip
    return FailoverService(
        s, aws.region,
        control=ControlStore(db, s.ledger_table, primary), history=ExecutionLog(db, s.ledger_table),
        runbook=Runbook(s, own, peer, accepted=accepted),
        facts=Facts(
            functools.partial(read_readiness, db, s.ledger_table), functools.partial(peer_reachable, s, peer),
            peer_ledger_failing=functools.partial(
                peer_ledger_failing, db, s.ledger_table, aws.region, s.peer_region, s.heartbeat_stale_seconds
            ),
            peer_seen_from_outside=(
                Route53Witness(client_for("route53", aws), s.peer_endpoint_health_check_id).sighting
                if s.peer_endpoint_health_check_id else no_witness
            ),
        ),
        metrics=EmfExecutionMetrics(aws.region), reconciler=reconciler(s, aws, own.lambda_),
        peer_control=ControlStore(
            peer_client("dynamodb", s.peer_region, s.peer_endpoint_url, s.peer_timeout_seconds), s.ledger_table,
            primary,
        ),
    )  # fmt: skip


def reconciler(s: FailoverSettings, aws: AwsSettings, lambda_: Any) -> Reconciler:
    """This region reconciles what a failover left in the peer: its queue, both DLQs, its journal (read in its
    own bucket), and waits until the peer has stopped for good."""
    sqs = client_for("sqs", aws)
    peer = functools.partial(peer_client, region=s.peer_region, endpoint_url=s.peer_endpoint_url,
                             timeout=s.peer_timeout_seconds)  # fmt: skip
    replay = processor_invoker(lambda_, s.processor_function)
    return Reconciler(
        aws.region,
        stranded=QueueForwarder(peer("sqs"), s.peer_queue_url, sqs, s.queue_url),
        dlqs={aws.region: DlqRedrive(sqs, s.dlq_url, sqs, s.queue_url),
              s.peer_region: DlqRedrive(peer("sqs"), s.peer_dlq_url, sqs, s.queue_url)},
        journals={aws.region: JournalReplay(client_for("s3", aws), s.archive_bucket, replay),
                  s.peer_region: JournalReplay(peer("s3"), s.peer_archive_bucket, replay)},
        old={s.peer_region: OldRegion(
            s.peer_region,
            ControlStore(peer("dynamodb"), s.ledger_table, primary_region(aws.region, s.region_role, s.peer_region)),
            ProcessingSwitch(s.peer_region, peer("lambda"), peer("ssm"), s.peer_processor_function,
                             s.peer_processing_state_parameter),
        )},
        budget_seconds=s.reconcile_budget_seconds, quiet_seconds=s.reconcile_quiet_seconds,
    )  # fmt: skip


@logger.inject_lambda_context(clear_state=True)
@coldstart.traced(tracer)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_request(event)  # ValueError naming what is wrong: the invoker's error
    reply = build_service().handle(request, seconds_left=context.get_remaining_time_in_millis() / 1000)
    logger.info(
        "failover handler",
        extra={"trigger": request.trigger, "action": request.action.value, "outcome": reply.get("outcome"),
               "reasons": reply.get("reasons", [])},
    )  # fmt: skip
    return reply


coldstart.end_of_init()

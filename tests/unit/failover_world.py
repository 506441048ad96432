"""Two regions on moto (in-process) as the failover handler sees them: a global cluster with the writer in
the primary, a processor with its SQS mapping per region (enabled in the primary only), an alarm topic per
region (DR's subscribed by a queue, to read what was sent) and a replica of the global table per region
(nothing replicates between them: a test writes the peer's replica itself)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from failover_handler.runbook import RegionApis, Runbook
from tandem.local import ledger_table_keys
from tandem.twin.extensions import rds_global
from tandem.twin.extensions.rds_global import PromotionRequest
from tandem_core.settings import FailoverSettings

PRIMARY, DR = "us-east-1", "us-west-2"
GLOBAL, TABLE = "tandem-ledger", "tandem-ledger-table"
CLUSTER = {PRIMARY: "tandem-ledger-primary", DR: "tandem-ledger-dr"}
FUNCTION = {PRIMARY: "tandem-app-primary-processor", DR: "tandem-app-dr-processor"}
STATE_PARAMETER = {PRIMARY: "/tandem/primary/processing-enabled", DR: "/tandem/dr/processing-enabled"}
ARCHIVE = {PRIMARY: "tandem-archive-primary", DR: "tandem-archive-dr"}


@dataclass
class World:
    clients: dict[str, dict[str, Any]]
    topic_inbox: str  # an SQS queue subscribed to DR's alarm topic: what notify sent
    promotions: list[PromotionRequest] = field(default_factory=list)

    def apis(self, region: str) -> RegionApis:
        c = self.clients[region]
        return RegionApis(region, c["rds"], c["lambda"], c["cloudwatch"], c["sns"], c["ssm"])

    def settings(self, region: str = DR) -> FailoverSettings:
        peer = PRIMARY if region == DR else DR
        topic = self.clients[region]["sns"].list_topics()["Topics"][0]["TopicArn"]
        return FailoverSettings.from_env({
            "TANDEM_REGION_ROLE": "dr" if region == DR else "primary", "PEER_REGION": peer,
            "LEDGER_TABLE_NAME": TABLE, "GLOBAL_CLUSTER_ID": GLOBAL, "LEDGER_DB_CLUSTER_ID": CLUSTER[region],
            "PROCESSOR_FUNCTION_NAME": FUNCTION[region], "PEER_PROCESSOR_FUNCTION_NAME": FUNCTION[peer],
            "ALARM_TOPIC_ARN": topic, "PROCESSING_STATE_PARAMETER": STATE_PARAMETER[region],
            "PEER_PROCESSING_STATE_PARAMETER": STATE_PARAMETER[peer],
            "ARCHIVE_BUCKET_NAME": ARCHIVE[region], "TRANSACTION_QUEUE_URL": self.queue(region),
            "TRANSACTION_DLQ_URL": self.dlq(region), "PEER_QUEUE_URL": self.queue(peer), "PEER_DLQ_URL": self.dlq(peer),
            "PEER_ARCHIVE_BUCKET_NAME": ARCHIVE[peer],
        })  # fmt: skip

    def queue(self, region: str) -> str:
        return str(self.clients[region]["sqs"].get_queue_url(QueueName=f"transactions-{region}")["QueueUrl"])

    def dlq(self, region: str) -> str:
        return str(self.clients[region]["sqs"].get_queue_url(QueueName=f"transactions-dlq-{region}")["QueueUrl"])

    def runbook(self, region: str = DR) -> Runbook:
        peer = PRIMARY if region == DR else DR
        return Runbook(self.settings(region), self.apis(region), self.apis(peer), sleep=lambda _s: None)

    def writer(self) -> str:
        gc = self.clients[DR]["rds"].describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
        arn = next(m["DBClusterArn"] for m in gc["GlobalClusterMembers"] if m["IsWriter"])
        return PRIMARY if CLUSTER[PRIMARY] in arn else DR

    def processing(self, region: str) -> str:
        mappings = self.clients[region]["lambda"].list_event_source_mappings(FunctionName=FUNCTION[region])
        return str(mappings["EventSourceMappings"][0]["State"])

    def recorded_processing(self, region: str) -> str:
        """The processing state the next deploy reads (the SSM parameter behind ProcessingEnabled)."""
        return str(self.clients[region]["ssm"].get_parameter(Name=STATE_PARAMETER[region])["Parameter"]["Value"])

    def gate(self) -> list[float]:
        """The gate metric's datapoints in the DR region, where infra_global's gate alarm reads it."""
        now = datetime.now(UTC)
        points = self.clients[DR]["cloudwatch"].get_metric_statistics(
            Namespace="Tandem/Failover", MetricName="PrimaryActive", Dimensions=[{"Name": "Gate", "Value": "primary"}],
            StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=60, Statistics=["Minimum"],
        )["Datapoints"]  # fmt: skip
        return [p["Minimum"] for p in points]

    def notices(self) -> list[dict[str, Any]]:
        messages = self.clients[DR]["sqs"].receive_message(QueueUrl=self.topic_inbox, MaxNumberOfMessages=10)
        return [json.loads(json.loads(m["Body"])["Message"]) for m in messages.get("Messages", [])]


@contextlib.contextmanager
def two_regions() -> Iterator[World]:
    """The world, with the twin's global-cluster extension recording each promotion (``aws_env`` set first)."""
    rds_global.install()
    with mock_aws():
        clients = {
            r: {
                s: boto3.client(s, region_name=r)
                for s in ("rds", "lambda", "cloudwatch", "sns", "sqs", "iam", "dynamodb", "ssm", "s3")
            }
            for r in (PRIMARY, DR)
        }
        clients[PRIMARY]["rds"].create_global_cluster(GlobalClusterIdentifier=GLOBAL, Engine="aurora-postgresql")
        role = clients[PRIMARY]["iam"].create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        for region in (PRIMARY, DR):
            c = clients[region]
            c["rds"].create_db_cluster(
                DBClusterIdentifier=CLUSTER[region], Engine="aurora-postgresql", GlobalClusterIdentifier=GLOBAL,
                **({"MasterUsername": "tandem", "MasterUserPassword": "secret123"} if region == PRIMARY else {}),
            )  # fmt: skip
            queue = c["sqs"].create_queue(QueueName=f"transactions-{region}")["QueueUrl"]
            c["sqs"].create_queue(QueueName=f"transactions-dlq-{region}")
            location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            c["s3"].create_bucket(Bucket=ARCHIVE[region], **location)
            queue_arn = c["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            c["lambda"].create_function(
                FunctionName=FUNCTION[region], Runtime="python3.12", Role=role, Handler="x.y",
                Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
            )  # fmt: skip
            c["lambda"].create_event_source_mapping(
                EventSourceArn=queue_arn, FunctionName=FUNCTION[region], Enabled=region == PRIMARY
            )
            c["sns"].create_topic(Name=f"tandem-alarms-{region}")
            c["ssm"].put_parameter(Name=STATE_PARAMETER[region], Value=str(region == PRIMARY).lower(), Type="String")
        for region in (PRIMARY, DR):  # the global table's replicas (nothing replicates in-process)
            clients[region]["dynamodb"].create_table(
                TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys()
            )
        inbox = clients[DR]["sqs"].create_queue(QueueName="inbox")["QueueUrl"]
        inbox_arn = clients[DR]["sqs"].get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        topic = clients[DR]["sns"].list_topics()["Topics"][0]["TopicArn"]
        clients[DR]["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
        w = World(clients, inbox)
        rds_global.set_promotion_handler(w.promotions.append)
        yield w
    rds_global.set_promotion_handler(None)

"""One local AWS region for drills and invokes: a moto server on loopback plus a real PostgreSQL.

Resources are provisioned from ``template.yaml`` (queue settings, the function's environment) with the
values a deployment would pass as parameters; the handler then runs unmodified against them, configured
only through the standard variables (AWS_REGION, AWS_ENDPOINT_URL) and the template's own.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from tandem import moto_ext
from tandem.localpg import LocalPostgres, free_port
from tandem.template import GLOBAL_TEMPLATE, ROOT, Template, TemplateError
from tandem.template import load as load_template

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@functools.cache
def ledger_table_keys() -> dict[str, Any]:
    """The DynamoDB global table's key schema, as infra_global/template.yaml declares it."""
    doc = load_template(GLOBAL_TEMPLATE)
    tables = [r for r in doc["Resources"].values() if r.get("Type") == "AWS::DynamoDB::GlobalTable"]
    if len(tables) != 1:
        raise TemplateError(f"{GLOBAL_TEMPLATE} must declare exactly one AWS::DynamoDB::GlobalTable")
    props = tables[0]["Properties"]
    return {"AttributeDefinitions": props["AttributeDefinitions"], "KeySchema": props["KeySchema"]}


FUNCTIONS = {"transaction_processor": "TransactionProcessorFunction", "region_health": "RegionHealthFunction"}


def emulator_client(service: str, region: str, endpoint: str) -> Any:
    """A boto3 client for one emulated region (the emulator accepts any credentials; these are fixed)."""
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the emulator's fixed test credentials
        config=Config(retries={"max_attempts": 2}),
    )


@dataclass
class RegionResources:
    table: str
    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    secret_arn: str
    max_receive_count: int
    visibility_timeout: int


@dataclass
class LocalRegion:
    """A running local region. Build it with :func:`local_region`."""

    region: str
    endpoint: str
    postgres: LocalPostgres
    template: Template
    resources: RegionResources
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = emulator_client(service, self.region, self.endpoint)
        return self._clients[service]

    def function_env(self, function: str) -> dict[str, str]:
        """The environment Lambda would give ``function`` in this region (template + runtime variables)."""
        logical_id = FUNCTIONS[function]
        env = self.template.function_environment(logical_id)
        env.update(
            AWS_REGION=self.region,
            AWS_DEFAULT_REGION=self.region,
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_LAMBDA_FUNCTION_NAME=f"tandem-{function}",
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_EXECUTION_ENV="AWS_Lambda_python3.12",
            LAMBDA_TASK_ROOT=str(ROOT / "src"),
            LAMBDA_RUNTIME_DIR="/var/runtime",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(self.template.properties(logical_id).get("MemorySize", 512)),
            POWERTOOLS_TRACE_DISABLED="true",
            POWERTOOLS_DEV="false",
            **FAKE_CREDENTIALS,
        )
        return env


def _parameters(region: str, pg: LocalPostgres, secret_arn: str, role: str) -> dict[str, str]:
    return {
        "RegionRole": role,
        "ProcessingEnabled": "true" if role == "primary" else "false",
        "LedgerTableName": "tandem-ledger",
        "ArchiveBucketName": f"tandem-archive-{region}",
        "LedgerDbHost": "127.0.0.1",
        "LedgerDbPort": str(pg.port),
        "LedgerDbName": pg.database,
        "LedgerDbSecretArn": secret_arn,
        "DataKeyArn": f"arn:aws:kms:{region}:123456789012:key/{uuid.UUID(int=1)}",
    }


def provision(region: LocalRegion) -> None:
    """Create the region's resources in the emulator from the template's definitions."""
    res, tpl = region.resources, region.template
    ddb = region.client("dynamodb")
    ddb.create_table(TableName=res.table, BillingMode="PAY_PER_REQUEST", **ledger_table_keys())
    s3 = region.client("s3")
    if region.region == "us-east-1":
        s3.create_bucket(Bucket=res.bucket)
    else:
        s3.create_bucket(Bucket=res.bucket, CreateBucketConfiguration={"LocationConstraint": region.region})
    s3.put_bucket_versioning(Bucket=res.bucket, VersioningConfiguration={"Status": "Enabled"})

    sqs = region.client("sqs")
    dlq_props = tpl.properties("TransactionDLQ")
    dlq_attrs = {"MessageRetentionPeriod": str(tpl.resolve(dlq_props.get("MessageRetentionPeriod", 1209600)))}
    res.dlq_url = sqs.create_queue(QueueName="tandem-transactions-dlq", Attributes=dlq_attrs)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=res.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    q_props = tpl.properties("TransactionQueue")
    redrive = q_props["RedrivePolicy"]
    res.max_receive_count = int(tpl.resolve(redrive["maxReceiveCount"]))
    res.visibility_timeout = int(tpl.resolve(q_props.get("VisibilityTimeout", 30)))
    attrs = {
        "VisibilityTimeout": str(res.visibility_timeout),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": res.max_receive_count}),
    }
    if "MessageRetentionPeriod" in q_props:
        attrs["MessageRetentionPeriod"] = str(tpl.resolve(q_props["MessageRetentionPeriod"]))
    res.queue_url = sqs.create_queue(QueueName="tandem-transactions", Attributes=attrs)["QueueUrl"]
    res.queue_arn = sqs.get_queue_attributes(QueueUrl=res.queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    tpl.physical["TransactionQueue"] = {"Ref": res.queue_url, "Arn": res.queue_arn, "QueueName": "tandem-transactions"}
    tpl.physical["TransactionDLQ"] = {"Ref": res.dlq_url, "Arn": dlq_arn, "QueueName": "tandem-transactions-dlq"}
    for logical in FUNCTIONS.values():
        function_name = str(tpl.resolve(tpl.properties(logical)["FunctionName"]))
        tpl.physical[logical] = {
            "Ref": function_name,
            "Arn": f"arn:aws:lambda:{region.region}:{tpl.account}:function:{function_name}",
        }
    provision_alarms(region)


def provision_alarms(region: LocalRegion) -> None:
    """The template's SNS topic and CloudWatch alarms, with their properties as written there."""
    tpl = region.template
    sns, cloudwatch = region.client("sns"), region.client("cloudwatch")
    for logical in tpl.resources_of_type("AWS::SNS::Topic"):
        arn = sns.create_topic(Name=f"{tpl.parameter('RegionRole')}-{logical}")["TopicArn"]
        tpl.physical[logical] = {"Ref": arn, "TopicArn": arn}
    keys = (
        "AlarmName", "AlarmDescription", "Namespace", "MetricName", "Dimensions", "Statistic", "ExtendedStatistic",
        "Period", "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData",
        "AlarmActions", "OKActions", "InsufficientDataActions", "ActionsEnabled", "Unit", "Metrics",
    )  # fmt: skip
    for logical, resource in tpl.resources_of_type("AWS::CloudWatch::Alarm").items():
        props = {k: tpl.resolve(v) for k, v in resource.get("Properties", {}).items() if k in keys}
        cloudwatch.put_metric_alarm(**props)
        tpl.physical[logical] = {"Ref": str(props["AlarmName"])}


def provision_region(region: str, endpoint: str, pg: LocalPostgres, role: str) -> LocalRegion:
    """Create one region's resources behind ``endpoint`` for a ledger served by ``pg``."""
    secret_arn = emulator_client("secretsmanager", region, endpoint).create_secret(
        Name="tandem/ledger/master",
        SecretString=json.dumps({"username": pg.user, "password": pg.password}),
    )["ARN"]
    template = Template.from_file(parameters=_parameters(region, pg, secret_arn, role), region=region)
    resources = RegionResources(
        table=template.parameter("LedgerTableName"),
        bucket=template.parameter("ArchiveBucketName"),
        queue_url="", queue_arn="", dlq_url="", secret_arn=secret_arn,
        max_receive_count=0, visibility_timeout=0,
    )  # fmt: skip
    local = LocalRegion(region, endpoint, pg, template, resources)
    provision(local)
    return local


@contextmanager
def local_region(region: str = "us-east-1", role: str = "primary") -> Iterator[LocalRegion]:
    """Start PostgreSQL and a moto server, provision, yield; stop both on the way out, whatever happens."""
    moto_ext.apply()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    pg = LocalPostgres()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request access log on stderr
    server.start()
    try:
        # moto keeps its state per process, not per server: start every local region from a clean slate.
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/reset", data=b"", timeout=10).close()
        pg.start()
        local = provision_region(region, f"http://127.0.0.1:{port}", pg, role)
        yield local
    finally:
        pg.stop()
        server.stop()


@contextmanager
def function_environment(env: dict[str, str]) -> Iterator[None]:
    """Run a block with os.environ set as Lambda would set it, restoring it afterwards."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)

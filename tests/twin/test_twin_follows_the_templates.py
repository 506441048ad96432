"""The twin is provisioned from the templates, nothing else: edit a copy of them and the twin follows.

One twin on edited copies of both templates (the only difference from the repository's): the archive
replication rule's prefix and the endpoint health check's interval in infra_global, the transaction queue's
visibility timeout and one extra function (published under an alias of its own) in template.yaml. Everything
is read back through the AWS APIs of the twin's regions and its ingress, as any client would.
"""

from __future__ import annotations

import copy
import json
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.template import APP_TEMPLATE, GLOBAL_TEMPLATE, load
from tandem.twin import launcher
from tests.twin.conftest import aws

PRIMARY, DR = "us-east-1", "us-west-2"


class _Dumper(yaml.SafeDumper):
    """Writes the long intrinsic forms (``{"Ref": ...}``), which CloudFormation reads as well as the tags."""


def _edited_templates(directory: Path) -> tuple[Path, Path]:
    glob = load(GLOBAL_TEMPLATE)
    rule = glob["Resources"]["ArchiveBucket"]["Properties"]["ReplicationConfiguration"]["Fn::If"][1]["Rules"][0]
    rule["Filter"] = {"Prefix": "archive/"}
    check = glob["Resources"]["PrimaryEndpointHealthCheck"]["Properties"]["HealthCheckConfig"]
    check["RequestInterval"] = 30
    app = load(APP_TEMPLATE)
    app["Resources"]["TransactionQueue"]["Properties"]["VisibilityTimeout"] = 240
    echo = copy.deepcopy(app["Resources"]["RegionHealthFunction"])
    echo["Properties"]["FunctionName"] = {"Fn::Sub": "${AWS::StackName}-echo"}
    echo["Properties"]["AutoPublishAlias"] = "blue"
    echo["Properties"]["Events"] = {"Echo": {"Type": "HttpApi", "Properties": {
        "ApiId": {"Ref": "IngressApi"}, "Path": "/echo", "Method": "GET"}}}  # fmt: skip
    app["Resources"]["EchoFunction"] = echo
    paths = directory / "global.yaml", directory / "template.yaml"
    for path, doc in zip(paths, (glob, app), strict=True):
        path.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False), encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def edited() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="tandem-twin-edited-") as d:
        state_dir = Path(d) / "twin"
        status = launcher.start(state_dir, scale=60.0, templates=_edited_templates(Path(d)))
        try:
            yield status
        finally:
            launcher.stop(state_dir)


def test_the_replication_rule_comes_from_the_global_template(edited: dict[str, Any]) -> None:
    for region in (PRIMARY, DR):
        bucket = edited["regions"][region]["resources"]["archive_bucket"]
        rules = aws(edited, region, "s3").get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"]["Rules"]
        assert [r["Filter"] for r in rules] == [{"Prefix": "archive/"}]


def test_the_health_checks_come_from_the_global_template(edited: dict[str, Any]) -> None:
    checks = aws(edited, PRIMARY, "route53").list_health_checks()["HealthChecks"]
    endpoint = [c["HealthCheckConfig"] for c in checks if c["HealthCheckConfig"]["Type"] == "HTTPS"]
    assert len(endpoint) == 2  # the primary's and the DR's endpoint checks
    assert sorted(c["RequestInterval"] for c in endpoint) == [10, 30]


def test_the_queue_comes_from_the_app_template(edited: dict[str, Any]) -> None:
    url = edited["regions"][PRIMARY]["resources"]["queue_url"]
    attrs = aws(edited, PRIMARY, "sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "240"


def test_a_function_added_to_the_template_runs_with_no_other_edit(edited: dict[str, Any]) -> None:
    """Through Lambda's Invoke API and through the ingress route its HttpApi event declares."""
    assert "echo" in edited["regions"][DR]["functions"]
    lam = aws(edited, DR, "lambda")
    reply = lam.invoke(FunctionName="tandem-app-dr-echo", Payload=json.dumps({"rawPath": "/echo"}).encode())
    assert "FunctionError" not in reply
    assert json.loads(reply["Payload"].read())["statusCode"] == 200
    with urllib.request.urlopen(f"{edited['regions'][DR]['ingress']}/echo", timeout=30) as resp:
        assert json.loads(resp.read())["region"] == DR


def test_auto_publish_alias_publishes_a_version_and_the_alias_is_invokable(edited: dict[str, Any]) -> None:
    """SAM's AutoPublishAlias as Lambda shows it: a published version behind the alias, invokable by its ARN; the
    processor's SQS mapping is on its alias ``live``."""
    lam = aws(edited, DR, "lambda")
    alias = lam.get_alias(FunctionName="tandem-app-dr-echo", Name="blue")
    assert alias["FunctionVersion"] not in ("$LATEST", "")
    assert edited["regions"][DR]["functions"]["echo"]["alias"] == alias["AliasArn"]
    reply = lam.invoke(FunctionName=alias["AliasArn"], Payload=json.dumps({"rawPath": "/echo"}).encode())
    assert json.loads(reply["Payload"].read())["statusCode"] == 200
    processor = edited["regions"][DR]["functions"]["transaction_processor"]["alias"]
    (mapping,) = lam.list_event_source_mappings(FunctionName=processor)["EventSourceMappings"]
    assert mapping["EventSourceArn"].endswith(":tandem-app-dr-transactions")

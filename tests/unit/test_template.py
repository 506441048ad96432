"""template.yaml says what the code expects: names, settings and limits that must not drift."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tandem.template import APP_TEMPLATE, Template, TemplateError
from tandem_core.settings import AwsSettings, LedgerDbSettings, ProcessorSettings

PARAMS = {
    "RegionRole": "dr",
    "ProcessingEnabled": "false",
    "LedgerTableName": "tandem-ledger",
    "ArchiveBucketName": "tandem-archive-dr",
    "LedgerDbHost": "db.example",
    "LedgerDbSecretArn": "arn:aws:secretsmanager:us-west-2:111122223333:secret:x",
    "DataKeyArn": "arn:aws:kms:us-west-2:111122223333:key/abc",
}


@pytest.fixture
def tpl() -> Template:
    return Template.from_file(parameters=PARAMS, region="us-west-2")


def test_processor_runs_the_handler_we_ship_on_python312_arm64(tpl: Template) -> None:
    props = tpl.properties("TransactionProcessorFunction")
    glob = tpl.doc["Globals"]["Function"]
    assert props["Handler"] == "transaction_processor.app.lambda_handler"
    assert props["CodeUri"] == "src/"
    assert glob["Runtime"] == "python3.12"
    assert glob["Architectures"] == ["arm64"]


def test_every_environment_variable_is_one_the_settings_read(tpl: Template) -> None:
    env = tpl.function_environment("TransactionProcessorFunction")
    known = {
        f.alias
        for model in (AwsSettings, LedgerDbSettings, ProcessorSettings)
        for f in model.model_fields.values()
        if f.alias
    } | {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
    assert set(env) <= known
    assert env["TANDEM_REGION_ROLE"] == "dr"
    assert env["LEDGER_TABLE_NAME"] == "tandem-ledger"
    # the template's environment is enough to build the settings (plus AWS_REGION from the runtime)
    ProcessorSettings.from_env(env)
    db = LedgerDbSettings.from_env(env)
    assert db.sslmode in {"require", "verify-full"}
    assert db.auth in {"secret", "iam"}


def test_sqs_mapping_reports_partial_failures_and_follows_the_parameter(tpl: Template) -> None:
    event = tpl.properties("TransactionProcessorFunction")["Events"]["TransactionQueue"]
    assert event["Type"] == "SQS"
    props = event["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == 10
    assert tpl.resolve(props["Enabled"]) is False  # DR: warm standby
    primary = Template(tpl.doc, parameters={**PARAMS, "ProcessingEnabled": "true"})
    assert primary.resolve(props["Enabled"]) is True


def test_queue_visibility_covers_six_function_timeouts_and_dead_letters(tpl: Template) -> None:
    timeout = int(tpl.doc["Globals"]["Function"]["Timeout"])
    queue = tpl.properties("TransactionQueue")
    assert int(queue["VisibilityTimeout"]) >= 6 * timeout
    assert 1 < int(queue["RedrivePolicy"]["maxReceiveCount"]) <= 10
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["TransactionDLQ", "Arn"]}
    for name in ("TransactionQueue", "TransactionDLQ"):
        assert "KmsMasterKeyId" in tpl.properties(name)


def test_alarms_cover_dlq_age_and_errors_into_the_topic(tpl: Template) -> None:
    alarms = {k: v["Properties"] for k, v in tpl.doc["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    metrics = {(p["Namespace"], p["MetricName"]) for p in alarms.values()}
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in metrics
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage") in metrics
    assert ("AWS/Lambda", "Errors") in metrics
    for props in alarms.values():
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert "KmsMasterKeyId" in tpl.properties("AlarmTopic")


def _statements(tpl: Template) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for policy in tpl.properties("TransactionProcessorFunction").get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            out += policy["Statement"]
    return out


def test_inline_iam_names_actions_and_resources(tpl: Template) -> None:
    statements = _statements(tpl)
    assert statements
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a for a in actions), st
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for r in resources:
            assert r != "*", st
            if isinstance(r, dict) and "Fn::GetAtt" in r:
                assert r["Fn::GetAtt"][0] in tpl.doc["Resources"]
            else:
                assert "*" not in str(tpl.resolve(r)).rsplit("/", 1)[0], st
    table = next(s for s in statements if s.get("Sid") == "LedgerTableStatus")
    assert tpl.resolve(table["Resource"]).endswith(":table/tandem-ledger")


def test_ingress_sends_signed_posts_straight_to_the_queue_and_serves_health(tpl: Template) -> None:
    integration = tpl.properties("IngressSqsIntegration")
    assert integration["IntegrationSubtype"] == "SQS-SendMessage"
    assert integration["RequestParameters"]["QueueUrl"] == {"Ref": "TransactionQueue"}
    assert integration["RequestParameters"]["MessageBody"] == "$request.body"
    route = tpl.properties("IngressTransactionsRoute")
    assert (route["RouteKey"], route["AuthorizationType"]) == ("POST /transactions", "AWS_IAM")
    role = tpl.properties("IngressRole")["Policies"][0]["PolicyDocument"]["Statement"]
    assert {a for st in role for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])} == {
        "sqs:SendMessage", "kms:GenerateDataKey", "kms:Decrypt",
    }  # fmt: skip
    health = tpl.properties("RegionHealthFunction")
    assert health["Handler"] == "region_health.app.lambda_handler"
    event = health["Events"]["Health"]["Properties"]
    assert (event["Path"], event["Method"], event["ApiId"]) == ("/health", "GET", {"Ref": "IngressApi"})
    assert "VpcConfig" not in health  # independent of the VPC's own health


def test_health_function_environment_is_what_its_settings_read() -> None:
    from tandem_core.settings import HealthSettings

    tpl = Template.from_file(parameters=PARAMS, region="us-west-2")
    tpl.physical["TransactionQueue"] = {"Ref": "https://sqs.us-west-2.amazonaws.com/111122223333/q"}
    env = tpl.function_environment("RegionHealthFunction")
    known = {f.alias for f in HealthSettings.model_fields.values()} | {
        "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE",
    }  # fmt: skip
    assert set(env) <= known
    assert HealthSettings.from_env(env).queue_url.endswith("/q")


def test_no_literal_secret_in_the_template() -> None:
    text = APP_TEMPLATE.read_text(encoding="utf-8")
    assert not re.search(r"(?i)(password|secret)\s*:\s*['\"]?[A-Za-z0-9!@#$%^&*]{6,}", text)


def test_unresolvable_expressions_are_refused_not_guessed(tpl: Template) -> None:
    with pytest.raises(TemplateError, match="GetAtt"):
        tpl.resolve({"Fn::GetAtt": ["AppKey", "Arn"]})
    with pytest.raises(TemplateError, match="NoSuchParam"):
        tpl.resolve({"Ref": "NoSuchParam"})

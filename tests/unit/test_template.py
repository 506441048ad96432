"""template.yaml says what the code expects: names, settings and limits that must not drift."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tandem.template import APP_TEMPLATE, Template, TemplateError
from tandem.twin.provision import Placeholder
from tandem_core.settings import AwsSettings, LedgerDbSettings, ProcessorSettings

PARAMS = {
    "RegionRole": "dr",
    "ProcessingEnabled": "false",
    "LedgerTableName": "tandem-ledger",
    "ArchiveBucketName": "tandem-archive-dr",
    "LedgerDbHost": "db.example",
    "LedgerDbReaderHost": "db-ro.example",
    "LedgerDbSecretArn": "arn:aws:secretsmanager:us-west-2:111122223333:secret:x",
    "LedgerDbClusterResourceId": "cluster-ABCDEFGHIJKLMNOP",
    "DataKeyArn": "arn:aws:kms:us-west-2:111122223333:key/abc",
    "PeerRegion": "us-east-1",
}


def _given(name: str) -> str:
    """PARAMS hold the values the SSM parameters would: read them back as given."""
    return name


@pytest.fixture
def tpl() -> Template:
    return Template.from_file(parameters=PARAMS, region="us-west-2", ssm=_given)


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
    } | {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_TRACE_DISABLED"}
    assert set(env) <= known
    assert env["TANDEM_REGION_ROLE"] == "dr"
    assert env["LEDGER_TABLE_NAME"] == "tandem-ledger"
    # the template's environment is enough to build the settings (plus AWS_REGION from the runtime)
    settings = ProcessorSettings.from_env(env)
    assert (settings.peer_region, settings.region_role) == ("us-east-1", "dr")  # a deployed processor is fenced
    assert 0 < settings.fence_max_age_seconds <= 5
    assert env["POWERTOOLS_TRACE_DISABLED"] == "false"  # Tracing=Active by default: the tracer is built
    db = LedgerDbSettings.from_env(env)
    assert db.sslmode in {"require", "verify-full"}
    assert db.auth in {"secret", "iam"}


def test_tracing_passthrough_keeps_the_xray_sdk_out_of_every_function() -> None:
    tpl = Template.from_file(parameters={**PARAMS, "Tracing": "PassThrough"}, region="us-west-2", ssm=_given)
    assert tpl.resolve(tpl.doc["Globals"]["Function"]["Tracing"]) == "PassThrough"
    assert tpl.function_environment("TransactionProcessorFunction")["POWERTOOLS_TRACE_DISABLED"] == "true"


def test_sqs_mapping_reports_partial_failures_and_follows_the_parameter(tpl: Template) -> None:
    event = tpl.properties("TransactionProcessorFunction")["Events"]["TransactionQueue"]
    assert event["Type"] == "SQS"
    props = event["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == 10
    assert tpl.resolve(props["Enabled"]) is False  # DR: warm standby
    primary = Template(tpl.doc, parameters={**PARAMS, "ProcessingEnabled": "true"}, ssm=_given)
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
    composites = [
        r["Properties"] for r in tpl.doc["Resources"].values() if r["Type"] == "AWS::CloudWatch::CompositeAlarm"
    ]
    paged_through_a_composite = {
        logical for c in composites for logical in alarms if f"${{{logical}}}" in str(c["AlarmRule"])
    }
    assert paged_through_a_composite == {"PeerHeartbeatStaleAlarm", "PeerUnhealthyAlarm", "PeerLedgerFailingAlarm"}
    for logical, props in alarms.items():
        if logical not in paged_through_a_composite:
            assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    for composite in composites:
        assert composite["AlarmActions"] == [{"Ref": "AlarmTopic"}]
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


def test_health_is_served_by_its_function_outside_the_vpc(tpl: Template) -> None:
    """The ingress's routes, as AWS's transform builds them, are checked in test_deploy_as_aws.py."""
    health = tpl.properties("RegionHealthFunction")
    assert health["Handler"] == "region_health.app.lambda_handler"
    event = health["Events"]["Health"]["Properties"]
    assert (event["Path"], event["Method"], event["ApiId"]) == ("/health", "GET", {"Ref": "IngressApi"})
    assert "VpcConfig" not in health  # independent of the VPC's own health


def test_health_function_environment_is_what_its_settings_read() -> None:
    from tandem_core.settings import HealthSettings

    tpl = Template.from_file(parameters=PARAMS, region="us-west-2", ssm=_given)
    tpl.physical["TransactionQueue"] = {"Ref": "https://sqs.us-west-2.amazonaws.com/111122223333/q"}
    env = tpl.function_environment("RegionHealthFunction")
    known = {f.alias for f in HealthSettings.model_fields.values()} | {
        "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_TRACE_DISABLED",
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


# ------------------------------------------------------------------------------------------------ replication monitor
MONITOR, OBSERVER = "ReplicationMonitorFunction", "ReplicationMonitorAuroraFunction"


def _monitor_template(**params: str) -> Template:
    tpl = Template.from_file(
        parameters={**PARAMS, "PeerRegion": "us-east-1", **params},
        region="us-west-2",
        ssm=lambda name: name,  # the SSM-typed parameters' given values stand for what SSM holds
    )
    tpl.physical["TransactionQueue"] = {"Ref": "https://sqs.us-west-2.amazonaws.com/123456789012/q"}
    tpl.physical["TransactionDLQ"] = {"Ref": "https://sqs.us-west-2.amazonaws.com/123456789012/dlq"}
    tpl.physical[OBSERVER] = {"Ref": "tandem-app-dr-replication-monitor-aurora"}
    tpl.physical["TransactionProcessorFunction"] = {
        "Ref": "tandem-app-dr-transaction-processor",
        "Arn": "arn:aws:lambda:us-west-2:123456789012:function:tandem-app-dr-transaction-processor",
        "Alias": "arn:aws:lambda:us-west-2:123456789012:function:tandem-app-dr-transaction-processor:live",
    }
    tpl.physical["FailoverHandlerFunction"] = {
        "Ref": "tandem-app-dr-failover-handler",
        "Arn": "arn:aws:lambda:us-west-2:123456789012:function:tandem-app-dr-failover-handler",
    }
    return tpl


def _policy_statements(tpl: Template, logical_id: str) -> list[dict[str, Any]]:
    """The inline statements this deployment gets (a statement under ``Fn::If`` only when its condition holds)."""
    return [
        st
        for policy in tpl.properties(logical_id)["Policies"]
        if isinstance(policy, dict)
        for st in tpl.expand(policy["Statement"])
    ]


def test_the_monitor_runs_every_minute_outside_the_vpc_and_its_timeout_covers_the_probe_loop() -> None:
    tpl = _monitor_template()
    props = tpl.properties(MONITOR)
    assert props["Handler"] == "replication_monitor.app.lambda_handler"
    assert props["CodeUri"] == "src/"
    assert "VpcConfig" not in props  # it must reach the peer's public /health; the VPC has no NAT
    (event,) = props["Events"].values()
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == "rate(1 minute)"
    assert event["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] == 0
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 0
    spec = tpl.doc["Parameters"]
    rounds, interval = int(spec["ProbeCount"]["MaxValue"]), int(spec["ProbeIntervalSeconds"]["MaxValue"])
    probe_timeout = float(tpl.function_environment(MONITOR)["PROBE_TIMEOUT_SECONDS"])
    # the longest probe loop, every probe timing out, plus the monitor's own reserve for the last round
    assert int(props["Timeout"]) >= (rounds - 1) * interval + rounds * probe_timeout + 5
    assert int(props["ReservedConcurrentExecutions"]) >= 2  # the next run may start before the last has finished
    observer = tpl.properties(OBSERVER)
    assert observer["Handler"] == "replication_monitor.aurora_app.lambda_handler"
    assert "VpcConfig" in observer  # the database is only reachable from inside


def test_the_monitor_environment_is_what_its_settings_read_with_the_documented_defaults() -> None:
    from tandem_core.settings import MonitorSettings

    tpl = _monitor_template()
    env = tpl.function_environment(MONITOR)
    known = {f.alias for m in (AwsSettings, MonitorSettings) for f in m.model_fields.values() if f.alias} | {
        "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_TRACE_DISABLED",
    }  # fmt: skip
    assert set(env) <= known
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Tandem/Replication"
    s = MonitorSettings.from_env(env)
    assert (s.rpo_budget_seconds, s.lag_warning_seconds) == (5.0, 2.0)
    assert (s.probe_count, s.probe_interval_seconds) == (6, 10.0)
    assert s.peer_region == "us-east-1"
    assert s.peer_archive_bucket == "tandem-archive-primary-123456789012"  # the global stack's name for it
    assert s.ledger_db_cluster_id == "tandem-ledger-dr"
    assert s.aurora_observer_function == "tandem-app-dr-replication-monitor-aurora"
    assert s.peer_health_url is None
    overridden = MonitorSettings.from_env(
        _monitor_template(PeerArchiveBucketName="other-bucket", RpoBudgetSeconds="8").function_environment(MONITOR)
    )
    assert (overridden.peer_archive_bucket, overridden.rpo_budget_seconds) == ("other-bucket", 8.0)
    primary = MonitorSettings.from_env(_monitor_template(RegionRole="primary", PeerRegion="us-west-2")
                                       .function_environment(MONITOR))  # fmt: skip
    assert primary.peer_archive_bucket == "tandem-archive-dr-123456789012"


def test_the_observer_logs_in_as_its_own_role_with_an_iam_token() -> None:
    env = _monitor_template().function_environment(OBSERVER)
    db = LedgerDbSettings.from_env(env)
    assert (db.auth, db.user, db.secret_arn) == ("iam", "tandem_observer", None)
    assert (db.sslmode, db.sslrootcert) == ("verify-full", None)  # the RDS roots of its region
    assert db.timeout < float(_monitor_template().properties(OBSERVER)["Timeout"])


def test_monitor_iam_names_every_resource_and_writes_only_its_own_keys() -> None:
    tpl = _monitor_template()
    tpl.physical["AppKey"] = {"Ref": "k", "Arn": "arn:aws:kms:us-west-2:123456789012:key/app"}
    tpl.physical["TransactionQueue"]["Arn"] = "arn:aws:sqs:us-west-2:123456789012:q"
    tpl.physical["TransactionDLQ"] = {"Ref": "dlq", "Arn": "arn:aws:sqs:us-west-2:123456789012:dlq"}
    tpl.physical[OBSERVER]["Arn"] = "arn:aws:lambda:us-west-2:123456789012:function:observer"
    statements = {st["Sid"]: tpl.resolve(st) for st in _policy_statements(tpl, MONITOR)}
    # where a resource cannot be named, the API offers no resource-level permission or a condition narrows it
    narrowed: dict[str, tuple[str, str] | None] = {
        "ReplicationMetrics": None,  # GetMetricData: no resource-level permissions
        "FindOwnProcessingMapping": None,  # ListEventSourceMappings: likewise
        "SwitchOffOwnProcessingWhenFenced": ("ArnLike", "lambda:FunctionArn"),
        "PeerAppKeyThroughSqs": ("StringEquals", "kms:ViaService"),
    }
    for sid, st in statements.items():
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a for a in actions), sid
        if sid in narrowed:
            condition = narrowed[sid]
            if condition is not None:
                assert condition[1] in st["Condition"][condition[0]], sid
            continue
        assert "*" not in str(st["Resource"]), sid
    switch = statements["SwitchOffOwnProcessingWhenFenced"]
    assert switch["Resource"] == "arn:aws:lambda:us-west-2:123456789012:event-source-mapping:*"  # own region only
    # the mapping invokes the alias (SnapStart runs published versions): only that mapping may be switched
    assert switch["Condition"]["ArnLike"]["lambda:FunctionArn"].endswith(
        ":function:tandem-app-dr-transaction-processor:live"
    )
    assert statements["PeerAppKeyThroughSqs"]["Resource"].startswith("arn:aws:kms:us-east-1:")
    writes = statements["OwnHeartbeatAndReadinessOnly"]
    assert writes["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"] == [
        "HEARTBEAT#us-west-2", "READINESS#us-west-2",
    ]  # fmt: skip
    reads = statements["PeerHeartbeatOwnReadinessAndControlRecordInThisReplica"]
    assert reads["Action"] == ["dynamodb:GetItem", "dynamodb:BatchGetItem"]
    assert reads["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"] == [
        "HEARTBEAT#us-east-1", "READINESS#us-west-2", "CONTROL",
    ]  # fmt: skip
    assert statements["OwnS3Heartbeat"]["Resource"] == "arn:aws:s3:::tandem-archive-dr/heartbeat/us-west-2"
    assert statements["PeerS3HeartbeatReplica"]["Resource"] == "arn:aws:s3:::tandem-archive-dr/heartbeat/us-east-1"
    # beyond its own records it changes only its own region's fence: its mapping, its processing state, its
    # queue's and its DLQ's messages (deleted once the active region's queue holds them); it never fails over
    changes = {
        (a, str(st["Resource"]))
        for st in statements.values()
        for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        if a.split(":")[1].startswith(("Update", "Delete", "Send", "Put", "Failover", "Switchover"))
        and a not in {"dynamodb:PutItem", "s3:PutObject"}
    }
    assert changes == {
        ("lambda:UpdateEventSourceMapping", "arn:aws:lambda:us-west-2:123456789012:event-source-mapping:*"),
        ("ssm:PutParameter", "arn:aws:ssm:us-west-2:123456789012:parameter/tandem/dr/processing-enabled"),
        ("sqs:DeleteMessage", "arn:aws:sqs:us-west-2:123456789012:q"),
        ("sqs:DeleteMessage", "arn:aws:sqs:us-west-2:123456789012:dlq"),
        ("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:tandem-app-primary-transactions"),
    }
    observer = {st["Sid"] for st in _policy_statements(tpl, OBSERVER)}
    assert observer == {"LedgerDbLogin", "AppKeyForEnvironment"}


SWITCH_AND_REPLAY = ("ProcessingSwitchOfBothProcessors", "ReconcileReplaysThroughThisRegionsProcessor")


@pytest.mark.parametrize(("given", "apply_on"), [("enabled", "PublishedVersions"), ("disabled", "None")])
def test_snapstart_is_a_parameter_and_everything_that_addresses_the_processor_names_its_alias(
    given: str, apply_on: str
) -> None:
    """SnapStart runs published versions only: the mapping, the fencing switches (own and peer), their IAM
    conditions and the reconciliation's replay all address the alias, whichever way the parameter is set."""
    tpl = _monitor_template(ProcessorSnapStart=given)
    tpl.physical["AlarmTopic"] = {"Ref": "arn:aws:sns:us-west-2:123456789012:alarms"}
    props = tpl.properties("TransactionProcessorFunction")
    assert tpl.resolve(props["SnapStart"]) == {"ApplyOn": apply_on}
    alias = tpl.resolve({"Ref": "TransactionProcessorFunction.Alias"})
    peer = "arn:aws:lambda:us-east-1:123456789012:function:tandem-app-primary-transaction-processor:live"
    assert (props["AutoPublishAlias"], alias.rsplit(":", 1)[-1]) == ("live", "live")
    assert tpl.function_environment(MONITOR)["PROCESSOR_FUNCTION_NAME"] == alias
    failover = tpl.function_environment("FailoverHandlerFunction")
    assert (failover["PROCESSOR_FUNCTION_NAME"], failover["PEER_PROCESSOR_FUNCTION_NAME"]) == (alias, peer)
    statements = {st["Sid"]: st for st in _policy_statements(tpl, "FailoverHandlerFunction")}
    statements = {sid: tpl.resolve(statements[sid]) for sid in SWITCH_AND_REPLAY}
    assert statements["ProcessingSwitchOfBothProcessors"]["Condition"]["ArnLike"]["lambda:FunctionArn"] == [alias, peer]
    assert statements["ReconcileReplaysThroughThisRegionsProcessor"]["Resource"] == alias
    assert tpl.resolve(tpl.doc["Outputs"]["TransactionProcessorAliasArn"]["Value"]) == alias


def test_processing_enabled_is_read_from_the_parameter_the_functions_write() -> None:
    """samconfig passes /tandem/<role>/processing-enabled; the handler and the monitor write that name."""
    from tandem.template import samconfig_parameters

    for env, role in (("primary", "primary"), ("dr", "dr")):
        name = samconfig_parameters(env).parameters["ProcessingEnabled"]
        tpl = Template.from_file(parameters={**PARAMS, "RegionRole": role}, region="us-west-2", ssm=lambda n: n)
        tpl.physical.update(_monitor_template().physical)
        tpl.physical["AlarmTopic"] = {"Ref": "arn:aws:sns:us-west-2:123456789012:alarms"}
        assert tpl.function_environment(MONITOR)["PROCESSING_STATE_PARAMETER"] == name
        assert tpl.function_environment("FailoverHandlerFunction")["PROCESSING_STATE_PARAMETER"] == name
    assert Template.from_file(parameters=PARAMS).doc["Parameters"]["ProcessingEnabled"]["Type"] == (
        "AWS::SSM::Parameter::Value<String>"  # resolved again by CloudFormation on every deploy
    )


def test_alarms_page_on_a_store_above_budget_and_on_a_region_not_ready() -> None:
    tpl = _monitor_template()
    alarms = {k: v["Properties"] for k, v in tpl.resources_of_type("AWS::CloudWatch::Alarm").items()}
    ours = {
        p["MetricName"]: p
        for p in alarms.values()
        if p["Namespace"] == "Tandem/Replication" and not p["MetricName"].startswith("Peer")  # failover's own
    }
    assert set(ours) == {"AuroraLagSeconds", "DynamoDbLagSeconds", "S3LagSeconds", "Ready", "FailoverArmed"}
    for name, props in ours.items():
        assert props["Dimensions"] == [{"Name": "Region", "Value": {"Ref": "AWS::Region"}}]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        if name not in ("Ready", "FailoverArmed"):
            assert props["Threshold"] == {"Ref": "RpoBudgetSeconds"}
            assert props["ComparisonOperator"] == "GreaterThanThreshold"
    ready = ours["Ready"]
    assert (ready["Threshold"], ready["ComparisonOperator"]) == (1, "LessThanThreshold")
    assert ready["TreatMissingData"] == "breaching"  # a silent monitor is not evidence of readiness
    armed = ours["FailoverArmed"]  # pages when automatic failover is not armed, before an outage finds it
    assert (armed["Threshold"], armed["ComparisonOperator"], armed["TreatMissingData"]) == (
        1, "LessThanThreshold", "breaching")  # fmt: skip
    assert tpl.doc["Parameters"]["RpoBudgetSeconds"]["Default"] == 5
    assert tpl.doc["Parameters"]["LagWarningSeconds"]["Default"] == 2


def test_the_dashboard_shows_lag_readiness_peer_liveness_and_the_pipeline() -> None:
    tpl = _monitor_template()
    body = tpl.properties("RegionDashboard")["DashboardBody"]["Fn::Sub"]
    text = re.sub(r"\$\{([^}]+)\}", lambda m: "7" if m.group(1).endswith("Seconds") else f"<{m.group(1)}>", body)
    widgets = json.loads(text)["widgets"]
    metrics = {
        (m[0], m[1]): (w["properties"].get("period"), m[2:4])
        for w in widgets
        if w["type"] == "metric"
        for m in w["properties"]["metrics"]
    }
    for name in ("AuroraLagSeconds", "DynamoDbLagSeconds", "S3LagSeconds", "Ready"):
        assert metrics[("Tandem/Replication", name)] == (60, ["Region", "<AWS::Region>"])
    for name in ("PeerHealthy", "PeerHeartbeatAgeSeconds"):
        assert metrics[("Tandem/Replication", name)] == (10, ["Region", "<AWS::Region>"])  # the probe cadence
    assert ("Tandem", "TransactionsCommitted") in metrics
    assert ("AWS/Lambda", "Errors") in metrics
    assert metrics[("AWS/SQS", "ApproximateNumberOfMessagesVisible")][1] == ["QueueName", "<TransactionDLQ.QueueName>"]
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage") in metrics
    assert any(w["type"] == "text" and "Failover executions" in w["properties"]["markdown"] for w in widgets)
    alarm_widget = next(w for w in widgets if w["type"] == "alarm")
    assert "<RegionNotReadyAlarm.Arn>" in alarm_widget["properties"]["alarms"]


@pytest.mark.parametrize(
    ("url", "accepted"),
    [("", True), ("https://abc.execute-api.us-east-1.amazonaws.com/health", True),
     ("http://127.0.0.1:43215/health", True), ("http://example.com/health", False),
     ("http://127.0.0.1.evil.example/health", False)],
)  # fmt: skip
def test_the_peer_health_url_is_https_or_the_twins_loopback_ingress(url: str, accepted: bool) -> None:
    tpl = Template.from_file(parameters={**PARAMS, "PeerRegion": "us-east-1", "PeerHealthUrl": url}, ssm=_given)
    if accepted:
        assert tpl.parameter("PeerHealthUrl") == url
    else:
        with pytest.raises(TemplateError, match="PeerHealthUrl"):
            tpl.parameter("PeerHealthUrl")


def test_peer_region_impaired_needs_both_signals_sustained_or_the_peers_word_and_only_it_triggers_the_handler() -> None:
    tpl = _monitor_template()
    stale, unhealthy = tpl.properties("PeerHeartbeatStaleAlarm"), tpl.properties("PeerUnhealthyAlarm")
    assert (stale["MetricName"], stale["Period"], stale["EvaluationPeriods"], stale["DatapointsToAlarm"]) == (
        "PeerHeartbeatAgeSeconds", 10, 3, 2,
    )  # fmt: skip
    assert stale["Threshold"] == {"Ref": "PeerHeartbeatAlarmSeconds"}
    # 4 failed probes 10 s apart span >= 30 s: a shorter blip cannot alarm
    assert (unhealthy["MetricName"], unhealthy["Period"], unhealthy["DatapointsToAlarm"]) == ("PeerHealthy", 10, 4)
    assert (unhealthy["Threshold"], unhealthy["ComparisonOperator"]) == (1, "LessThanThreshold")
    assert stale["TreatMissingData"] == unhealthy["TreatMissingData"] == "missing"
    # the grey path: the peer's own word that its ledger has not committed for longer than the threshold, by
    # its own observations a round apart (one failed observation reads 0 s): one datapoint is enough, 1 of 3
    ledger = tpl.properties("PeerLedgerFailingAlarm")
    assert (ledger["MetricName"], ledger["Period"], ledger["EvaluationPeriods"], ledger["DatapointsToAlarm"]) == (
        "PeerLedgerFailingSeconds", 10, 3, 1,
    )  # fmt: skip
    assert (ledger["Threshold"], ledger["ComparisonOperator"], ledger["TreatMissingData"]) == (
        {"Ref": "PeerLedgerFailingAlarmSeconds"}, "GreaterThanOrEqualToThreshold", "missing",
    )  # fmt: skip
    assert tpl.parameter("PeerLedgerFailingAlarmSeconds") == "30"  # 4 failed observations in a row
    composite = tpl.properties("PeerRegionImpairedAlarm")
    assert composite["AlarmRule"] == {
        "Fn::Sub": '(ALARM("${PeerHeartbeatStaleAlarm}") AND ALARM("${PeerUnhealthyAlarm}"))'
        ' OR ALARM("${PeerLedgerFailingAlarm}")'
    }
    (event,) = tpl.properties("FailoverHandlerFunction")["Events"].values()
    assert event["Properties"]["Pattern"]["detail"] == {
        "alarmName": [{"Ref": "PeerRegionImpairedAlarm"}], "state": {"value": ["ALARM"]},
    }  # fmt: skip
    assert event["Properties"]["State"] == {"Fn::If": ["IsAutomaticFailover", "ENABLED", "DISABLED"]}


def test_the_handlers_witness_reads_only_the_peers_endpoint_check_and_only_when_given() -> None:
    handler = "FailoverHandlerFunction"
    without = {st["Sid"] for st in _policy_statements(_monitor_template(), handler)}
    assert "TheWitnessRoute53sCheckersViewOfThePeer" not in without
    check = "0f0e0d0c-0000-4000-8000-00000000000a"
    tpl = _monitor_template(PeerEndpointHealthCheckId=check)
    wanted = ("TheWitnessRoute53sCheckersViewOfThePeer", "ThisRegionsReadinessAndThePeersWordOnItsLedger")
    statements = {st["Sid"]: tpl.resolve(st) for st in _policy_statements(tpl, handler) if st["Sid"] in wanted}
    witness = statements["TheWitnessRoute53sCheckersViewOfThePeer"]
    assert (witness["Action"], witness["Resource"]) == (
        "route53:GetHealthCheckStatus", f"arn:aws:route53:::healthcheck/{check}",
    )  # fmt: skip
    leading = statements["ThisRegionsReadinessAndThePeersWordOnItsLedger"]["Condition"]["ForAllValues:StringEquals"]
    assert leading["dynamodb:LeadingKeys"] == ["READINESS#us-west-2", "HEARTBEAT#us-east-1"]


def test_functions_log_in_as_their_own_database_roles_and_only_the_schema_step_holds_the_master_secret(
    tpl: Template,
) -> None:
    secret = PARAMS["LedgerDbSecretArn"]
    for resource in tpl.doc["Resources"]:  # every other resource as a name: only the database's values matter here
        tpl.physical.setdefault(resource, Placeholder(Ref=resource))
    roles = {"TransactionProcessorFunction": "tandem_processor", "ReplicationMonitorAuroraFunction": "tandem_observer"}
    for logical in tpl.resources_of_type("AWS::Serverless::Function"):
        env = tpl.function_environment(logical)
        statements = [tpl.resolve(st) for st in _policy_statements(tpl, logical)]
        reads_secrets = [st for st in statements if "secretsmanager:GetSecretValue" in json.dumps(st["Action"])]
        assert "LEDGER_AUTO_MIGRATE" not in env, logical  # functions never migrate: the deploy does
        assert secret not in env.values(), logical  # no function's environment names the master secret
        assert "LEDGER_DB_SECRET_ARN" not in env, logical
        if logical == "LedgerSchemaFunction":  # the deploy's step: the secret comes with its request
            assert [st["Resource"] for st in reads_secrets] == [secret]
            assert tpl.resolve(tpl.properties("LedgerSchema")["MasterSecretArn"]) == secret
            continue
        assert reads_secrets == [], logical
        logins = [st for st in statements if st["Action"] == "rds-db:connect"]
        if logical in roles:
            assert (env["LEDGER_DB_AUTH"], env["LEDGER_DB_USER"]) == ("iam", roles[logical])
            assert [st["Resource"] for st in logins] == [
                f"arn:aws:rds-db:us-west-2:123456789012:dbuser:cluster-ABCDEFGHIJKLMNOP/{roles[logical]}"
            ]
        else:
            assert logins == [], logical
            assert "LEDGER_DB_HOST" not in env, logical


def test_the_schema_step_runs_before_the_code_that_needs_it(tpl: Template) -> None:
    step = tpl.resource("LedgerSchema")
    assert step["Type"] == "Custom::LedgerSchema"
    assert step["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["LedgerSchemaFunction", "Arn"]}
    assert step["Properties"]["CodeVersion"] == {"Ref": "LedgerSchemaFunction.Version"}  # asked again per package
    for logical in ("TransactionProcessorFunction", "ReplicationMonitorAuroraFunction"):
        assert tpl.resource(logical)["DependsOn"] == "LedgerSchema", logical
    assert tpl.properties("LedgerSchemaFunction")["Handler"] == "ledger_schema.app.lambda_handler"

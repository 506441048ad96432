"""The twin provisions the rules and schedules a template declares (SAM function events and Events::Rule)."""

from __future__ import annotations

import json
from typing import Any

from tandem.template import Template
from tandem.twin.rules import rules_from_template, rules_of_function

ARN = "arn:aws:lambda:us-west-2:123456789012:function:tandem-failover"


def template(resources: dict[str, Any]) -> Template:
    return Template({"Parameters": {"Role": {"Type": "String", "Default": "dr"}}, "Resources": resources})


def test_schedule_and_pattern_events_of_a_function_become_rules() -> None:
    pattern = {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"]}
    tpl = template(
        {
            "Fn": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Events": {
                        "Every": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}},
                        "Off": {"Type": "Schedule", "Properties": {"Schedule": "rate(5 minutes)", "Enabled": False}},
                        "Alarm": {"Type": "EventBridgeRule", "Properties": {"Pattern": pattern}},
                        "Queue": {"Type": "SQS", "Properties": {"Queue": "arn"}},
                    }
                },
            }
        }
    )
    specs = {s.name: s for s in rules_from_template(tpl, {"Fn": ARN})}
    assert set(specs) == {"Fn-Every", "Fn-Off", "Fn-Alarm"}
    assert specs["Fn-Every"].put_rule_args() == {
        "Name": "Fn-Every",
        "State": "ENABLED",
        "ScheduleExpression": "rate(1 minute)",
    }
    assert specs["Fn-Off"].enabled is False
    assert json.loads(specs["Fn-Alarm"].pattern or "") == pattern
    assert {s.target_arn for s in specs.values()} == {ARN}


def test_an_events_rule_resource_targeting_a_function_becomes_a_rule() -> None:
    tpl = template(
        {
            "Fn": {"Type": "AWS::Serverless::Function", "Properties": {}},
            "Gate": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Name": {"Fn::Sub": "tandem-${Role}-gate"},
                    "ScheduleExpression": "rate(2 minutes)",
                    "State": "DISABLED",
                    "Targets": [
                        {"Id": "fn", "Arn": {"Fn::GetAtt": ["Fn", "Arn"]}},
                        {"Id": "x", "Arn": "arn:aws:sns:x"},
                    ],
                },
            },
        }
    )
    (spec,) = rules_from_template(tpl, {"Fn": ARN})
    assert (spec.name, spec.schedule, spec.enabled, spec.target_arn) == (
        "tandem-dr-gate",
        "rate(2 minutes)",
        False,
        ARN,
    )


def test_the_app_template_declares_no_rule_it_cannot_provision() -> None:
    tpl = Template.from_file(
        parameters={"LedgerTableName": "t", "ArchiveBucketName": "b", "LedgerDbHost": "h", "LedgerDbSecretArn": "a",
                    "DataKeyArn": "k", "RegionRole": "primary"},
    )  # fmt: skip
    tpl.physical["PeerRegionImpairedAlarm"] = {"Ref": "impaired"}  # an alarm's Ref is its name
    arns = {logical: ARN for logical in tpl.resources_of_type("AWS::Serverless::Function")}
    for spec in rules_from_template(tpl, arns):
        assert spec.schedule or spec.pattern


def test_the_failover_rule_has_sams_name_and_matches_only_the_impaired_alarm_going_to_alarm() -> None:
    tpl = Template.from_file(
        parameters={"LedgerTableName": "t", "ArchiveBucketName": "b", "LedgerDbHost": "h", "LedgerDbSecretArn": "a",
                    "DataKeyArn": "k", "RegionRole": "dr", "PeerRegion": "us-east-1"},
    )  # fmt: skip
    stack = tpl.resolve({"Ref": "AWS::StackName"})
    tpl.physical["PeerRegionImpairedAlarm"] = {"Ref": f"{stack}-peer-region-impaired"}  # an alarm's Ref: its name
    (spec,) = rules_of_function(tpl, "FailoverHandlerFunction", ARN)
    assert spec.name == f"{stack}-peer-region-impaired"
    assert json.loads(spec.pattern or "{}") == {
        "source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
        "detail": {"alarmName": [f"{stack}-peer-region-impaired"], "state": {"value": ["ALARM"]}},
    }  # fmt: skip

"""The twin's CloudFormation, through boto3 as ``sam deploy`` calls it: change sets, execution, failures.

moto in-process; the provisioner is the twin's (:mod:`tandem.twin.provision`), its creators moto-backed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.twin.change_sets import NO_CHANGES
from tandem.twin.extensions import cloudformation
from tandem.twin.provision import Region

REGION = "us-east-1"
TEMPLATE: dict[str, Any] = {
    "Parameters": {"Stage": {"Type": "String", "AllowedValues": ["blue", "green"], "Default": "blue"}},
    "Resources": {
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 60}},
        "Name": {"Type": "AWS::SSM::Parameter",
                 "Properties": {"Name": "/demo/stage", "Type": "String", "Value": {"Ref": "Stage"}}},
    },
    "Outputs": {"QueueUrl": {"Value": {"Ref": "Queue"}, "Description": "the queue"},
                "Stage": {"Value": {"Ref": "Stage"}}},
}  # fmt: skip


@pytest.fixture
def cfn(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        clients: dict[str, Any] = {}

        def client(service: str) -> Any:
            return clients.setdefault(service, boto3.client(service, region_name=REGION))

        backend = cloudformation.install(lambda region: (Region(region, client), {}))
        try:
            yield client("cloudformation")
        finally:
            backend.wait_idle()
            cloudformation.uninstall()  # moto's own CloudFormation for the tests that use it


def _change_set(
    cfn: Any, kind: str, template: dict[str, Any] | str = TEMPLATE, name: str = "demo", **extra: Any
) -> dict[str, Any]:
    body = template if isinstance(template, str) else json.dumps(template)
    created = cfn.create_change_set(StackName=name, ChangeSetName=f"cs{len(extra)}{kind}", TemplateBody=body,
                                    ChangeSetType=kind, **extra)  # fmt: skip
    described: dict[str, Any] = cfn.describe_change_set(ChangeSetName=created["Id"])
    return described


def _deploy(cfn: Any, kind: str = "CREATE", **extra: Any) -> dict[str, Any]:
    change_set = _change_set(cfn, kind, **extra)
    assert change_set["Status"] == "CREATE_COMPLETE", change_set.get("StatusReason")
    cfn.execute_change_set(ChangeSetName=change_set["ChangeSetId"])
    waiter = "stack_create_complete" if kind == "CREATE" else "stack_update_complete"
    cfn.get_waiter(waiter).wait(StackName="demo", WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})
    stack: dict[str, Any] = cfn.describe_stacks(StackName="demo")["Stacks"][0]
    return stack


def test_a_change_set_creates_the_stack_and_its_resources(cfn: Any) -> None:
    change_set = _change_set(cfn, "CREATE")
    assert {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"]["Action"] for c in change_set["Changes"]} == {
        "Queue": "Add", "Name": "Add"}  # fmt: skip
    assert cfn.describe_stacks(StackName="demo")["Stacks"][0]["StackStatus"] == "REVIEW_IN_PROGRESS"
    cfn.execute_change_set(ChangeSetName=change_set["ChangeSetId"])
    cfn.get_waiter("stack_create_complete").wait(StackName="demo", WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})
    stack = cfn.describe_stacks(StackName="demo")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    queue_url = boto3.client("sqs", region_name=REGION).get_queue_url(QueueName=outputs["QueueUrl"].rsplit("/", 1)[-1])
    assert queue_url["QueueUrl"] == outputs["QueueUrl"]
    assert outputs["Stage"] == "blue"  # the default
    ssm = boto3.client("ssm", region_name=REGION)
    assert ssm.get_parameter(Name="/demo/stage")["Parameter"]["Value"] == "blue"
    resources = cfn.list_stack_resources(StackName="demo")["StackResourceSummaries"]
    assert {(r["LogicalResourceId"], r["ResourceType"], r["ResourceStatus"]) for r in resources} == {
        ("Queue", "AWS::SQS::Queue", "CREATE_COMPLETE"),
        ("Name", "AWS::SSM::Parameter", "CREATE_COMPLETE"),
    }
    events = cfn.describe_stack_events(StackName="demo")["StackEvents"]
    assert (events[0]["LogicalResourceId"], events[0]["ResourceStatus"]) == ("demo", "CREATE_COMPLETE")
    assert {e["ResourceStatus"] for e in events if e["LogicalResourceId"] == "Queue"} == {
        "CREATE_IN_PROGRESS", "CREATE_COMPLETE"}  # fmt: skip
    assert cfn.get_template(StackName="demo")["TemplateBody"] == TEMPLATE  # botocore decodes a JSON body


def test_an_update_changes_what_changed_and_nothing_else(cfn: Any) -> None:
    _deploy(cfn)
    same = _change_set(cfn, "UPDATE")
    assert (same["Status"], same["StatusReason"]) == ("FAILED", NO_CHANGES)
    new_value = _change_set(cfn, "UPDATE", Parameters=[{"ParameterKey": "Stage", "ParameterValue": "green"}])
    changes = [(c["ResourceChange"]["LogicalResourceId"], c["ResourceChange"]["Action"]) for c in new_value["Changes"]]
    assert changes == [("Name", "Modify")]
    cfn.execute_change_set(ChangeSetName=new_value["ChangeSetId"])
    cfn.get_waiter("stack_update_complete").wait(StackName="demo", WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})
    stack = cfn.describe_stacks(StackName="demo")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert "LastUpdatedTime" in stack
    assert boto3.client("ssm", region_name=REGION).get_parameter(Name="/demo/stage")["Parameter"]["Value"] == "green"
    kept = _change_set(cfn, "UPDATE", Parameters=[{"ParameterKey": "Stage", "UsePreviousValue": True}])
    assert kept["Status"] == "FAILED"  # the previous value, so nothing changes


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"Parameters": [{"ParameterKey": "Stage", "ParameterValue": "red"}]}, "Stage"),
        ({"Parameters": [{"ParameterKey": "Colour", "ParameterValue": "red"}]}, r"Parameters: \[Colour\] do not exist"),
        ({"TemplateBody": json.dumps({**TEMPLATE, "Description": "x" * 52_000})}, "less than or equal to 51200"),
        ({"TemplateBody": "Resources: [unclosed"}, "Template format error"),
        (
            {
                "TemplateBody": json.dumps(
                    {"Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Ref": "Nowhere"}}}}}
                )
            },
            "Template format error",
        ),
    ],
)
def test_cloudformation_refuses_a_bad_request_before_anything_exists(
    cfn: Any, request_: dict[str, Any], message: str
) -> None:
    args = {
        "StackName": "demo",
        "ChangeSetName": "bad",
        "ChangeSetType": "CREATE",
        "TemplateBody": json.dumps(TEMPLATE),
    }
    with pytest.raises(ClientError, match=message) as error:
        cfn.create_change_set(**{**args, **request_})
    assert error.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError, match="does not exist"):
        cfn.describe_stacks(StackName="demo")


def test_a_change_set_fails_with_cloudformations_reason(cfn: Any) -> None:
    role = {
        "Type": "AWS::IAM::Role",
        "Properties": {"AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}},
    }
    with_role = {**TEMPLATE, "Resources": {**TEMPLATE["Resources"], "Role": role}}
    failed = _change_set(cfn, "CREATE", with_role)
    assert (failed["Status"], failed["StatusReason"]) == ("FAILED", "Requires capabilities : [CAPABILITY_IAM]")
    function = {"Type": "AWS::Serverless::Function", "Properties": {"Handler": "a.b", "Runtime": "python3.12"}}
    sam = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {"Fn": function}}
    failed = _change_set(cfn, "CREATE", sam, name="sam")
    assert failed["Status"] == "FAILED"
    assert failed["StatusReason"].startswith("Transform AWS::Serverless-2016-10-31 failed with: ")
    assert "Resource with id [Fn] is invalid" in failed["StatusReason"]


def test_a_resource_that_fails_rolls_the_stack_back_with_its_reason(cfn: Any) -> None:
    broken = {
        **TEMPLATE,
        "Resources": {**TEMPLATE["Resources"], "Odd": {"Type": "AWS::Odd::Thing", "DependsOn": "Queue"}},
    }
    change_set = _change_set(cfn, "CREATE", broken)
    cfn.execute_change_set(ChangeSetName=change_set["ChangeSetId"])
    with pytest.raises(Exception, match="ROLLBACK_COMPLETE"):
        cfn.get_waiter("stack_create_complete").wait(StackName="demo", WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})
    events = cfn.describe_stack_events(StackName="demo")["StackEvents"]
    failed = next(e for e in events if e["ResourceStatus"] == "CREATE_FAILED")
    assert failed["LogicalResourceId"] == "Odd"
    assert "does not know how to provide AWS::Odd::Thing" in failed["ResourceStatusReason"]
    assert cfn.describe_stacks(StackName="demo")["Stacks"][0]["StackStatus"] == "ROLLBACK_COMPLETE"


def test_a_transform_that_adds_resources_of_its_own_needs_cloudformations_auto_expand(cfn: Any) -> None:
    """The Secrets Manager transform (a hosted rotation function's nested stack) must be acknowledged."""
    rotating = {**TEMPLATE, "Transform": "AWS::SecretsManager-2020-07-23"}
    failed = _change_set(cfn, "CREATE", rotating, name="rotating", Capabilities=["CAPABILITY_IAM"])
    assert (failed["Status"], failed["StatusReason"]) == ("FAILED", "Requires capabilities : [CAPABILITY_AUTO_EXPAND]")
    acknowledged = _change_set(cfn, "CREATE", rotating, name="rotating2", Capabilities=["CAPABILITY_AUTO_EXPAND"])
    assert acknowledged["Status"] == "CREATE_COMPLETE", acknowledged.get("StatusReason")

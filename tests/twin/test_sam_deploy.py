"""The real ``sam deploy`` (the pinned aws-sam-cli) deploys into the twin, through its CloudFormation.

Every config env of samconfig.toml is deployed by SAM CLI into the region it names, with the parameter
values the twin's stacks hold (read back with DescribeStacks, as an operator would); SAM CLI packages the
code, uploads it and the template to its managed bucket (``resolve_s3``), creates and executes the change
set and waits on the stack's events. A second run changes nothing; an edited template reaches the stack.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.sam.cli import sam
from tandem.template import APP_TEMPLATE, ROOT, load, samconfig_envs, samconfig_parameters
from tests.twin.conftest import aws

PRIMARY, DR = "us-east-1", "us-west-2"


def _deploy(twin: dict[str, Any], env: str, *extra: str, overrides: dict[str, str] | None = None) -> Any:
    """``sam deploy --config-env env`` against the twin, with the values the env's stack holds now."""
    config = samconfig_parameters(env)
    stack = aws(twin, config.region, "cloudformation").describe_stacks(StackName=config.stack_name)["Stacks"][0]
    values = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"] if p["ParameterValue"]}
    values |= overrides or {}  # an empty value is left out: SAM CLI keeps the previous one
    args = ["deploy", "--config-env", env, "--no-confirm-changeset", "--no-fail-on-empty-changeset",
            "--no-progressbar", *extra, "--parameter-overrides", *[f"{k}={v}" for k, v in values.items()]]  # fmt: skip
    return sam(args, endpoint=twin["regions"][config.region]["endpoint"])


@pytest.mark.parametrize("env", samconfig_envs())
def test_sam_deploy_deploys_every_env_and_a_second_run_changes_nothing(twin: dict[str, Any], env: str) -> None:
    first = _deploy(twin, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    again = _deploy(twin, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "No changes to deploy" in again.stdout + again.stderr
    config = samconfig_parameters(env)
    cfn = aws(twin, config.region, "cloudformation")
    assert cfn.describe_stacks(StackName=config.stack_name)["Stacks"][0]["StackStatus"] in {
        "CREATE_COMPLETE", "UPDATE_COMPLETE"}  # fmt: skip
    managed = cfn.describe_stacks(StackName="aws-sam-cli-managed-default")["Stacks"][0]  # resolve_s3's bucket
    bucket = next(o["OutputValue"] for o in managed["Outputs"] if o["OutputKey"] == "SourceBucket")
    assert aws(twin, config.region, "s3").list_objects_v2(Bucket=bucket)["KeyCount"] > 0


def test_an_edited_template_reaches_the_stack_through_sam_deploy(twin: dict[str, Any]) -> None:
    doc = load(APP_TEMPLATE)
    doc["Resources"]["SamDeployProbe"] = {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 42}}
    for resource in doc["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = str(ROOT / "src")
    with tempfile.TemporaryDirectory() as d:
        edited = Path(d) / "template.yaml"
        edited.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        done = _deploy(twin, "primary", "--template-file", str(edited), "--config-file", str(ROOT / "samconfig.toml"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cfn = aws(twin, PRIMARY, "cloudformation")
    stack = samconfig_parameters("primary").stack_name
    resources = {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]}
    queue_url = resources["SamDeployProbe"]["PhysicalResourceId"]
    attributes = aws(twin, PRIMARY, "sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
    )
    assert attributes["Attributes"]["VisibilityTimeout"] == "42"
    processed = cfn.get_template(StackName=stack, TemplateStage="Processed")["TemplateBody"]
    processed = processed if isinstance(processed, dict) else json.loads(processed)
    assert processed["Resources"]["TransactionProcessorFunction"]["Type"] == "AWS::Lambda::Function"


def test_sam_deploy_reports_cloudformations_refusal(twin: dict[str, Any]) -> None:
    refused = _deploy(twin, "dr", overrides={"RegionRole": "tertiary"})
    assert refused.returncode != 0
    assert "RegionRole" in refused.stdout + refused.stderr


def test_the_stack_holds_what_sams_transform_generates(twin: dict[str, Any]) -> None:
    """The twin provisions AWS's transform of the template: a role per function with its own statements, the
    version and alias, the mapping on the alias, rules with their invoke permissions, each function with its
    own Timeout and MemorySize."""
    stack = samconfig_parameters("primary").stack_name
    cfn, lam, iam = (aws(twin, PRIMARY, s) for s in ("cloudformation", "lambda", "iam"))
    kinds = {
        r["LogicalResourceId"]: r["ResourceType"]
        for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    }
    assert kinds["TransactionProcessorFunctionRole"] == "AWS::IAM::Role"
    assert kinds["TransactionProcessorFunctionAliaslive"] == "AWS::Lambda::Alias"
    assert kinds["TransactionProcessorFunctionTransactionQueue"] == "AWS::Lambda::EventSourceMapping"
    assert kinds["FailoverHandlerFunctionPeerRegionImpaired"] == "AWS::Events::Rule"
    assert kinds["FailoverHandlerFunctionPeerRegionImpairedPermission"] == "AWS::Lambda::Permission"
    assert [k for k, v in kinds.items() if v == "AWS::Lambda::Version"]
    roles = {}
    for logical, timeout in (("TransactionProcessorFunction", 30), ("FailoverHandlerFunction", 120),
                             ("ReplicationMonitorFunction", 80)):  # fmt: skip
        name = next(r["PhysicalResourceId"] for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
                    if r["LogicalResourceId"] == logical)  # fmt: skip
        config = lam.get_function_configuration(FunctionName=name)
        assert config["Timeout"] == timeout
        roles[logical] = config["Role"].rsplit("/", 1)[-1]
    assert len(set(roles.values())) == 3  # one role each
    policies = iam.list_role_policies(RoleName=roles["TransactionProcessorFunction"])["PolicyNames"]
    document = iam.get_role_policy(RoleName=roles["TransactionProcessorFunction"], PolicyName=policies[0])
    assert "LedgerTableStatus" in json.dumps(document["PolicyDocument"])
    handler = next(r["PhysicalResourceId"] for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
                   if r["LogicalResourceId"] == "FailoverHandlerFunction")  # fmt: skip
    policy = json.loads(lam.get_policy(FunctionName=handler)["Policy"])
    assert any(s["Principal"] == {"Service": "events.amazonaws.com"} for s in policy["Statement"])

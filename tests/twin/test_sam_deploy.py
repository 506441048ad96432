"""The real ``sam deploy`` (the pinned aws-sam-cli) deploys into the twin, through its CloudFormation.

``tandem deploy --target twin`` runs the whole order with SAM CLI (``sam package`` and ``sam deploy
--config-env`` of each env), ending armed; a second run changes nothing; a dry run creates the change sets
and executes none; ``tandem doctor`` then finds automatic failover armed, and names what disarms it; an edited
template (a new resource, an alarm's threshold, ProcessorSnapStart) reaches the twin and shows through boto3.
The envs outside the order are deployed by ``sam deploy`` itself.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.sam.cli import sam
from tandem.template import APP_TEMPLATE, ROOT, load, samconfig_envs, samconfig_parameters
from tests.twin.conftest import aws

PRIMARY, DR = "us-east-1", "us-west-2"
TWIN_SCALE = 1.0  # real time: deploys restart functions and the ingress; compressed, a restart looks like a region loss
AUTOMATIC_FAILOVER = True


def _deploy(twin: dict[str, Any], env: str, *extra: str, overrides: dict[str, str] | None = None) -> Any:
    """``sam deploy --config-env env`` against the twin, with the values the env's stack holds now."""
    config = samconfig_parameters(env)
    stack = aws(twin, config.region, "cloudformation").describe_stacks(StackName=config.stack_name)["Stacks"][0]
    values = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"] if p["ParameterValue"]}
    values |= overrides or {}  # an empty value is left out: SAM CLI keeps the previous one
    args = ["deploy", "--config-env", env, "--no-confirm-changeset", "--no-fail-on-empty-changeset",
            "--no-progressbar", *extra, "--parameter-overrides", *[f"{k}={v}" for k, v in values.items()]]  # fmt: skip
    return sam(args, endpoint=twin["regions"][config.region]["endpoint"])


def _tandem_deploy(twin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's command, as a user runs it."""
    command = [
        str(ROOT / ".venv" / "bin" / "tandem"),
        "deploy",
        "--target",
        "twin",
        "--state-dir",
        str(twin_dir),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


def _results(out: str) -> dict[int, str]:
    """Step number -> created | updated | unchanged | previewed, from `tandem deploy`'s lines."""
    rows = (line.split() for line in out.splitlines() if line[:1].isdigit() and ". " in line[:4])
    return {int(row[0].rstrip(".")): row[4] for row in rows}


def _parameters(twin: dict[str, Any], region: str, stack: str) -> dict[str, str]:
    found = aws(twin, region, "cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in found["Parameters"]}


def test_tandem_deploy_runs_the_whole_order_through_sam_deploy_and_a_second_run_changes_nothing(
    twin_dir: Path, twin: dict[str, Any]
) -> None:
    first = _tandem_deploy(twin_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert sorted(_results(first.stdout)) == [1, 2, 3, 4, 5, 6, 7, 8]
    again = _tandem_deploy(twin_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert set(_results(again.stdout).values()) == {"unchanged"}, again.stdout
    for region, peer in ((PRIMARY, DR), (DR, PRIMARY)):  # armed: each monitor probes the other's ingress
        app = _parameters(twin, region, twin["regions"][region]["resources"]["stack"])
        assert app["PeerHealthUrl"] == twin["regions"][peer]["peer_ingress"] + "/health"  # through the border
    for region, peer_check in ((PRIMARY, "DrEndpointHealthCheckId"), (DR, "PrimaryEndpointHealthCheckId")):
        app = _parameters(twin, region, twin["regions"][region]["resources"]["stack"])  # each handler's witness
        assert app["PeerEndpointHealthCheckId"] == _output(twin, PRIMARY, "tandem-global-primary", peer_check)
    dns = _parameters(twin, PRIMARY, "tandem-global-primary")
    assert dns["HostedZoneId"] == twin["hosted_zone"]
    dr_app = twin["regions"][DR]["resources"]["stack"]
    assert dns["DrHealthCheckDomain"] == _output(twin, DR, dr_app, "IngressHealthCheckDomain")
    secondary = _parameters(twin, DR, "tandem-global-secondary")
    assert secondary["PeerDataKeyArn"] == _output(twin, PRIMARY, "tandem-global-primary", "DataKeyArn")


def _doctor(twin_dir: Path) -> tuple[int, dict[str, Any]]:
    tandem = str(ROOT / ".venv" / "bin" / "tandem")
    done = subprocess.run([tandem, "doctor", "--json", "--state-dir", str(twin_dir)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_after_tandem_deploy_doctor_finds_failover_armed_and_says_what_disarms_it(
    twin_dir: Path, twin: dict[str, Any]
) -> None:
    deadline = time.monotonic() + 90  # the monitors run every minute and publish FailoverArmed
    code, report = _doctor(twin_dir)
    while code != 0 and time.monotonic() < deadline:
        time.sleep(3)
        code, report = _doctor(twin_dir)
    assert (code, report["armed"]) == (0, True), [f for f in report["findings"] if not f["ok"]]
    checks = {(f["region"], f["check"]) for f in report["findings"]}
    assert {(DR, "database observable"), (PRIMARY, "handler permission"), ("both", "route53")} <= checks
    events = aws(twin, DR, "events")
    rule = f"{twin['regions'][DR]['resources']['stack']}-peer-region-impaired"
    events.disable_rule(Name=rule)
    try:
        code, report = _doctor(twin_dir)
    finally:
        events.enable_rule(Name=rule)
    assert (code, report["armed"]) == (1, False)
    (finding,) = [f for f in report["findings"] if not f["ok"] and f["check"] == "failover rule"]
    assert finding["region"] == DR
    assert finding["fix"] == f"aws events enable-rule --name {rule} --region {DR}"


def _output(twin: dict[str, Any], region: str, stack: str, key: str) -> str:
    found = aws(twin, region, "cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return str(next(o["OutputValue"] for o in found["Outputs"] if o["OutputKey"] == key))


def test_a_changed_template_reaches_the_twin_through_tandem_deploy_and_a_dry_run_changes_nothing(
    twin_dir: Path, twin: dict[str, Any], tmp_path: Path
) -> None:
    doc = load(APP_TEMPLATE)
    doc["Resources"]["TandemDeployProbe"] = {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 42}}
    dlq_alarm = next(k for k, r in doc["Resources"].items() if "dlq-depth" in str(r["Properties"].get("AlarmName")))
    doc["Resources"][dlq_alarm]["Properties"]["Threshold"] = 3
    for resource in doc["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = str(ROOT / "src")
    (tmp_path / "template.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    (tmp_path / "infra_global").symlink_to(ROOT / "infra_global")
    config = (ROOT / "samconfig.toml").read_text(encoding="utf-8")
    config = config.replace(
        '"ProcessingEnabled=/tandem/primary/processing-enabled",',  # the primary app's envs only
        '"ProcessingEnabled=/tandem/primary/processing-enabled", "ProcessorSnapStart=enabled",',
    )
    (tmp_path / "samconfig.toml").write_text(config, encoding="utf-8")
    stack = twin["regions"][PRIMARY]["resources"]["stack"]
    cfn, lam = aws(twin, PRIMARY, "cloudformation"), aws(twin, PRIMARY, "lambda")
    processor = twin["regions"][PRIMARY]["functions"]["transaction_processor"]["name"]
    live_before = lam.get_alias(FunctionName=processor, Name="live")["FunctionVersion"]
    updated_before = cfn.describe_stacks(StackName=stack)["Stacks"][0]["LastUpdatedTime"]

    preview = _tandem_deploy(twin_dir, "--config-file", str(tmp_path / "samconfig.toml"), "--dry-run")
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-3000:]
    assert "TandemDeployProbe" in preview.stdout
    assert dlq_alarm in preview.stdout
    assert cfn.describe_stacks(StackName=stack)["Stacks"][0]["LastUpdatedTime"] == updated_before

    done = _tandem_deploy(twin_dir, "--config-file", str(tmp_path / "samconfig.toml"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = _results(done.stdout)  # both apps run the edited template; the global stacks did not change
    assert [results[n] for n in (1, 2, 4, 5, 7, 8)] == [
        "unchanged", "unchanged", "updated", "updated", "unchanged", "unchanged",
    ]  # fmt: skip
    resources = {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]}
    queue = aws(twin, PRIMARY, "sqs").get_queue_attributes(
        QueueUrl=resources["TandemDeployProbe"]["PhysicalResourceId"], AttributeNames=["VisibilityTimeout"]
    )
    assert queue["Attributes"]["VisibilityTimeout"] == "42"
    alarm = resources[dlq_alarm]["PhysicalResourceId"]
    assert aws(twin, PRIMARY, "cloudwatch").describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["Threshold"] == 3
    live = lam.get_alias(FunctionName=processor, Name="live")["FunctionVersion"]
    assert live != live_before  # SnapStart toggled: a new version, and the alias on it
    assert lam.get_function_configuration(FunctionName=processor, Qualifier="live")["SnapStart"]["ApplyOn"] == (
        "PublishedVersions"
    )
    processed = cfn.get_template(StackName=stack, TemplateStage="Processed")["TemplateBody"]
    processed = processed if isinstance(processed, dict) else json.loads(processed)
    assert processed["Resources"]["TransactionProcessorFunction"]["Type"] == "AWS::Lambda::Function"


@pytest.mark.parametrize("env", [e for e in samconfig_envs() if e not in ("primary", "dr", "global-primary",
                                                                          "global-secondary")])  # fmt: skip
def test_sam_deploy_deploys_the_envs_outside_the_order(twin: dict[str, Any], env: str) -> None:
    """tandem deploy ran `sam deploy --config-env` for the four envs of its order; the others here."""
    first = _deploy(twin, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    again = _deploy(twin, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "No changes to deploy" in again.stdout + again.stderr
    config = samconfig_parameters(env)
    cfn = aws(twin, config.region, "cloudformation")
    managed = cfn.describe_stacks(StackName="aws-sam-cli-managed-default")["Stacks"][0]  # resolve_s3's bucket
    bucket = next(o["OutputValue"] for o in managed["Outputs"] if o["OutputKey"] == "SourceBucket")
    assert aws(twin, config.region, "s3").list_objects_v2(Bucket=bucket)["KeyCount"] > 0


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

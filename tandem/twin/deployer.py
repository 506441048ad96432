"""What ``sam deploy`` does, for the twin's own start-up: package, upload, change set, execute, wait.

The twin deploys its stacks through the same CloudFormation API a user's ``sam deploy`` calls (one way to
deploy; :mod:`tandem.twin.extensions.cloudformation` serves it): each function's local ``CodeUri`` is
zipped and uploaded to the region's artifacts bucket (``sam package``), a template over CloudFormation's
51,200-byte body limit goes by ``TemplateURL`` from the same bucket, then a change set is created, executed
and waited for. An update that changes nothing ends as ``sam deploy`` ends it: "No changes to deploy".
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tandem.deploy.plan import DeployError, describe_stack
from tandem.deploy.version import VERSION_KEY, code_packages, needs_key, version_key
from tandem.sam.transform import declares_sam, with_code_at
from tandem.template import load
from tandem.twin import change_sets
from tandem.twin.extensions import cloudformation
from tandem.twin.provision import Region, Stack

ARTIFACTS_BUCKET = "tandem-twin-artifacts-{region}"
CAPABILITIES = ("CAPABILITY_IAM",)  # what samconfig.toml's envs pass
#: the macro transforms a template may declare, for which CloudFormation wants CAPABILITY_AUTO_EXPAND
EXPANDING = change_sets.EXPANDING_TRANSFORMS
_POLL = 0.02  # seconds between DescribeChangeSet / DescribeStacks while waiting


def deploy_stack(region: Region, name: str, template: Path, parameters: dict[str, str]) -> Stack:
    """Deploy ``template`` as stack ``name`` in ``region`` (create or update) and return what it provisioned."""
    cfn = region.client("cloudformation")
    change_set = create_change_set(region, name, template, parameters)
    if change_set["Status"] == "FAILED":
        if change_set.get("StatusReason") == change_sets.NO_CHANGES:
            return deployed_stack(region, name)
        raise DeployError(f"{name} in {region.name}: change set failed: {change_set.get('StatusReason')}")
    cfn.execute_change_set(ChangeSetName=change_set["ChangeSetId"])
    stack = _wait(lambda: cfn.describe_stacks(StackName=name)["Stacks"][0], "StackStatus")
    if stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
        reasons = [f"{e['LogicalResourceId']}: {e['ResourceStatusReason']}" for e in events
                   if e["ResourceStatus"].endswith("_FAILED") and e.get("ResourceStatusReason")]  # fmt: skip
        raise DeployError(f"{name} in {region.name}: {stack['StackStatus']}: {'; '.join(reasons[:3])}")
    return deployed_stack(region, name)


def create_change_set(region: Region, name: str, template: Path, parameters: dict[str, str]) -> dict[str, Any]:
    """Package and upload, then create the change set and wait until CloudFormation has decided it (what
    ``sam deploy --no-execute-changeset`` leaves behind); returns DescribeChangeSet's answer."""
    cfn, s3 = region.client("cloudformation"), region.client("s3")
    bucket = _artifacts_bucket(region)
    doc = load(template)
    if declares_sam(doc):
        uris = _upload_code(s3, bucket, doc, template.parent)
        doc = with_code_at(doc, uris)
        if needs_key(doc) and VERSION_KEY not in parameters:
            parameters = {**parameters, VERSION_KEY: version_key(region.client("ssm"), doc, parameters, uris)}
    body = json.dumps(doc)
    existing = describe_stack(cfn, name)
    args: dict[str, Any] = {
        "StackName": name, "ChangeSetName": f"tandem-{time.time_ns()}", "Capabilities": _capabilities(doc),
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "ChangeSetType": "CREATE" if existing is None or existing["StackStatus"] == "REVIEW_IN_PROGRESS" else "UPDATE",
        "Description": "Created by the Tandem twin's deploy",
    }  # fmt: skip
    if len(body.encode()) > change_sets.TEMPLATE_BODY_LIMIT:
        key = f"templates/{hashlib.sha256(body.encode()).hexdigest()}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
        args["TemplateURL"] = f"{s3.meta.endpoint_url}/{bucket}/{key}"
    else:
        args["TemplateBody"] = body
    change_set_id = cfn.create_change_set(**args)["Id"]
    return _wait(lambda: cfn.describe_change_set(ChangeSetName=change_set_id), "Status")


def _capabilities(doc: dict[str, Any]) -> list[str]:
    """What samconfig.toml's env for this template acknowledges: CAPABILITY_AUTO_EXPAND where a transform expands."""
    transform = doc.get("Transform")
    expands = set(transform if isinstance(transform, list) else [transform]) & set(EXPANDING)
    return [*CAPABILITIES, *(["CAPABILITY_AUTO_EXPAND"] if expands else [])]


def deployed_stack(region: Region, name: str) -> Stack:
    """What the stack provisioned, as it stands now."""
    deployed = cloudformation.backend().find(region.name, name).deployed
    assert deployed is not None
    return deployed


def _wait(describe: Any, key: str, timeout: float = 300.0) -> dict[str, Any]:
    """Poll ``describe()`` until ``key`` (a change set's or a stack's status) is no longer pending or in progress."""
    deadline = time.monotonic() + timeout
    while True:
        answer: dict[str, Any] = describe()
        status = str(answer[key])
        if not status.endswith(("_IN_PROGRESS", "_PENDING")):
            return answer
        if time.monotonic() > deadline:
            raise DeployError(f"still {status} after {timeout:.0f} s")
        time.sleep(_POLL)


def _artifacts_bucket(region: Region) -> str:
    """The region's bucket for packages and large templates (``sam deploy``'s ``s3_bucket``)."""
    s3, bucket = region.client("s3"), ARTIFACTS_BUCKET.format(region=region.name)
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        config = (
            {} if region.name == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region.name}}
        )
        s3.create_bucket(Bucket=bucket, **config)
    return bucket


def _upload_code(s3: Any, bucket: str, doc: dict[str, Any], base: Path) -> dict[str, str]:
    """``sam package``: each function's code package uploaded once per content, keyed by its hash."""
    uris: dict[str, str] = {}
    for logical_id, package in code_packages(doc, base).items():
        key = f"code/{hashlib.sha256(package).hexdigest()}.zip"
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError:
            s3.put_object(Bucket=bucket, Key=key, Body=package)
        uris[logical_id] = f"s3://{bucket}/{key}"
    return uris

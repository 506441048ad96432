"""CloudFormation custom resources for the twin's provisioner, by CloudFormation's own protocol.

For a ``Custom::*`` (or ``AWS::CloudFormation::CustomResource``) resource CloudFormation invokes the function
its ``ServiceToken`` names with a Create or Update request carrying a presigned S3 ``ResponseURL``, and waits
for the function to PUT its answer there: SUCCESS with a physical id and ``Data`` (what ``Fn::GetAtt`` reads),
or FAILED with the reason that fails the stack operation. The twin does the same against the region's
emulated S3. Like CloudFormation it asks again on an update only when the resource's properties changed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from tandem.template import TemplateError
from tandem.twin.provision import CUSTOM_RESOURCE, Creator, Deployment

RESPONSES_BUCKET = "tandem-twin-cfn-responses-{region}"  # CloudFormation's own response bucket, per region
_PROPERTIES = "__properties__"  # the properties the resource was last created or updated with

#: (region, function, event) -> the worker's reply (``ok``, ``errorType``, ``errorMessage``)
Invoke = Callable[[str, str, dict[str, Any]], dict[str, Any]]


class CustomResources:
    """Runs custom resources through ``invoke``; ``function_of(region, arn)`` names the function an ARN is."""

    def __init__(self, invoke: Invoke, function_of: Callable[[str, str], str]) -> None:
        self._invoke = invoke
        self._function_of = function_of

    def creators(self) -> dict[str, Creator]:
        return {CUSTOM_RESOURCE: self.provide}

    def provide(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
        previous = d.template.physical.get(logical)
        properties = json.dumps(props, sort_keys=True, default=str)
        if previous is not None and previous.get(_PROPERTIES) == properties:
            return previous  # unchanged: CloudFormation does not ask the function again
        region, s3 = d.region.name, d.client("s3")
        bucket = RESPONSES_BUCKET.format(region=region)
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket, **_location(region))
        request_id = str(uuid.uuid4())
        key = f"{d.stack}/{logical}/{request_id}"
        event: dict[str, Any] = {
            "RequestType": "Update" if previous is not None else "Create",
            "ServiceToken": str(props["ServiceToken"]),
            "ResponseURL": s3.generate_presigned_url(
                "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=7200
            ),
            "StackId": f"arn:aws:cloudformation:{region}:{d.region.account}:stack/{d.stack}/{_stack_uuid(d.stack)}",
            "RequestId": request_id,
            "ResourceType": str(d.template.resource(logical)["Type"]),
            "LogicalResourceId": logical,
            "ResourceProperties": props,
        }  # fmt: skip
        if previous is not None:
            event |= {"PhysicalResourceId": previous["Ref"], "OldResourceProperties": json.loads(previous[_PROPERTIES])}
        function = self._function_of(region, event["ServiceToken"])
        reply = self._invoke(region, function, event)
        try:
            answer = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            raise TemplateError(
                f"{logical}: {function} sent CloudFormation no answer ({reply.get('errorType')}: "
                f"{reply.get('errorMessage')})"
            ) from None
        if answer.get("Status") != "SUCCESS":
            raise TemplateError(f"{logical}: {answer.get('Reason') or 'FAILED without a reason'}")
        data = {str(k): str(v) for k, v in (answer.get("Data") or {}).items()}
        return {**data, "Ref": str(answer["PhysicalResourceId"]), _PROPERTIES: properties}


def _stack_uuid(stack: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, stack)


def _location(region: str) -> dict[str, Any]:
    return {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}

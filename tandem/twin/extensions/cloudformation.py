"""CloudFormation in the twin: the stack lifecycle ``sam deploy`` drives, provisioned by the twin's provisioner.

moto's own CloudFormation creates resources through moto's models only: it knows neither AWS's SAM transform
nor the twin's functions, ingress and Aurora pair. This module replaces the stack actions of moto's
``CloudFormationResponse`` (moto dispatches an action to the snake_case method of the same name) with a
backend that does what CloudFormation does with a change set:

- **CreateChangeSet** checks what CloudFormation checks before it answers (the template in the request or at
  a URL in the region's S3, the 51,200-byte limit on a template in the request, parameters that exist, have
  values and keep their constraints, IAM capabilities), creates a new stack as ``REVIEW_IN_PROGRESS``, then
  applies the template's transform with AWS's own SAM translator (:mod:`tandem.sam.transform`) and lists
  the changes. A transform that refuses the template fails the change set with its reason; an update that
  changes nothing fails it with CloudFormation's "didn't contain changes" (which ``sam deploy`` reports as
  "No changes to deploy").
- **ExecuteChangeSet** provisions the processed template (what the transform made: for a SAM app the plain
  ``AWS::Lambda::*``, ``AWS::IAM::Role``, ``AWS::Events::Rule``, ``AWS::ApiGatewayV2::*`` resources, never
  SAM's own) in the background, as CloudFormation does, with stack events per resource
  (``*_IN_PROGRESS``, ``*_COMPLETE``, ``*_FAILED`` with the reason) and the stack's status; a failure ends in
  ``ROLLBACK_COMPLETE`` (a new stack) or ``UPDATE_ROLLBACK_COMPLETE``, the stack keeping its previous
  template and outputs. The twin does not undo what the failed attempt created: its resources are updated in
  place by the next deploy (every creator is idempotent). A resource an update removes leaves the stack's
  list (the change set says ``Remove``) but is not deleted from the region (no deleters yet).
- **DescribeStacks / DescribeStackEvents / ListStackResources / DescribeStackResource(s) / GetTemplate /
  GetTemplateSummary / DescribeChangeSet / ListChangeSets / DeleteChangeSet** answer from that record.

The provisioner and its creators are the twin's (``set_provider``): resources are created through the
region's real API endpoints, the functions, ingress and database by the twin itself. The records and the
execution live in :mod:`tandem.twin.change_sets`; this module is the API on moto's response class.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from moto.cloudformation.exceptions import ValidationError
from moto.cloudformation.responses import CloudFormationResponse
from moto.core.responses import ActionResult, EmptyResult

from tandem.template import loads
from tandem.twin.change_sets import CloudFormationBackend, Provider, StackRecord

# ---------------------------------------------------------------------------------------------- the API
_backend: CloudFormationBackend | None = None


def backend() -> CloudFormationBackend:
    if _backend is None:
        raise RuntimeError("the twin's CloudFormation has no provisioner (set_provider was not called)")
    return _backend


def set_provider(provider: Provider | None, account: str = "123456789012") -> CloudFormationBackend | None:
    """Serve CloudFormation with ``provider``'s regions and creators (None: moto's own CloudFormation again)."""
    global _backend
    _backend = CloudFormationBackend(provider, account) if provider is not None else None
    return _backend


def _read_template_url(response: CloudFormationResponse, url: str) -> str:
    """A TemplateURL in this region's S3: path style (``/bucket/key``, what ``sam deploy`` builds against a
    custom endpoint) or virtual-hosted (``bucket.s3.<region>.amazonaws.com/key``)."""
    parts = urllib.parse.urlsplit(url)
    host, path = parts.hostname or "", urllib.parse.unquote(parts.path.lstrip("/"))
    if ".s3." in host or host.endswith(".s3.amazonaws.com"):
        bucket, key = host.split(".s3", 1)[0], path
    else:
        bucket, _, key = path.partition("/")
    version = urllib.parse.parse_qs(parts.query).get("versionId", [None])[0]
    from moto.s3.models import s3_backends

    s3 = s3_backends[response.current_account][response.partition]
    try:
        obj = s3.get_object(bucket, key, version_id=version)
    except Exception:
        obj = None
    if obj is None:
        raise ValidationError(message=f"TemplateURL must be a supported URL: {url} cannot be read")
    return bytes(obj.value).decode("utf-8")


def _request(response: CloudFormationResponse, *keys: str) -> dict[str, Any]:
    return {k: response._get_param(k) for k in keys if response._get_param(k) is not None}


def _create_change_set(self: CloudFormationResponse) -> ActionResult:
    request = _request(self, "StackName", "ChangeSetName", "TemplateBody", "TemplateURL", "UsePreviousTemplate",
                       "ChangeSetType", "Parameters", "Tags", "Capabilities", "Description")  # fmt: skip
    change_set_id, stack_id = backend().create_change_set(
        self.region, request, lambda url: _read_template_url(self, url)
    )
    return ActionResult({"Id": change_set_id, "StackId": stack_id})


def _describe_change_set(self: CloudFormationResponse) -> ActionResult:
    _, change_set = backend().change_set(self.region, self._get_param("ChangeSetName"), self._get_param("StackName"))
    return ActionResult(change_set.describe())


def _list_change_sets(self: CloudFormationResponse) -> ActionResult:
    stack = backend().find(self.region, self._get_param("StackName"))
    summaries = [
        {k: v for k, v in cs.describe().items() if k not in {"Parameters", "Tags", "Changes", "Capabilities"}}
        for cs in stack.change_sets.values()
    ]
    return ActionResult({"Summaries": summaries})


def _delete_change_set(self: CloudFormationResponse) -> EmptyResult:
    backend().delete_change_set(self.region, self._get_param("ChangeSetName"), self._get_param("StackName"))
    return EmptyResult()


def _execute_change_set(self: CloudFormationResponse) -> EmptyResult:
    backend().execute(self.region, self._get_param("ChangeSetName"), self._get_param("StackName"))
    return EmptyResult()


def _describe_stacks(self: CloudFormationResponse) -> ActionResult:
    name = self._get_param("StackName")
    stacks = [backend().find(self.region, name, deleted=True)] if name else backend().live(self.region)
    return ActionResult({"Stacks": [s.describe() for s in stacks]})


def _describe_stack_events(self: CloudFormationResponse) -> ActionResult:
    stack = backend().find(self.region, self._get_param("StackName"), deleted=True)
    return ActionResult({"StackEvents": list(stack.events)})


def _resources(self: CloudFormationResponse) -> tuple[StackRecord, list[dict[str, Any]]]:
    stack = backend().find(self.region, self._get_param("StackName"), deleted=True)
    return stack, [dict(r) for r in stack.resources.values()]


def _list_stack_resources(self: CloudFormationResponse) -> ActionResult:
    _, resources = _resources(self)
    return ActionResult({"StackResourceSummaries": resources})


def _describe_stack_resources(self: CloudFormationResponse) -> ActionResult:
    stack, resources = _resources(self)
    wanted = self._get_param("LogicalResourceId")
    rows = [{**r, "StackId": stack.id, "StackName": stack.name, "Timestamp": r["LastUpdatedTimestamp"]}
            for r in resources if wanted in (None, r["LogicalResourceId"])]  # fmt: skip
    for row in rows:
        del row["LastUpdatedTimestamp"]
    return ActionResult({"StackResources": rows})


def _describe_stack_resource(self: CloudFormationResponse) -> ActionResult:
    stack, resources = _resources(self)
    wanted = self._get_param("LogicalResourceId")
    found = next((r for r in resources if r["LogicalResourceId"] == wanted), None)
    if found is None:
        raise ValidationError(message=f"Resource {wanted} does not exist for stack {stack.name}")
    return ActionResult({"StackResourceDetail": {**found, "StackId": stack.id, "StackName": stack.name}})


def _get_template(self: CloudFormationResponse) -> ActionResult:
    stack_name, change_set_name = self._get_param("StackName"), self._get_param("ChangeSetName")
    if change_set_name:
        _, change_set = backend().change_set(self.region, change_set_name, stack_name)
        body, processed = change_set.body, change_set.processed
    else:
        stack = backend().find(self.region, stack_name, deleted=True)
        body, processed = stack.body, stack.processed
    stage = self._get_param("TemplateStage") or "Original"
    text = json.dumps(processed) if stage == "Processed" else body
    return ActionResult({"TemplateBody": text, "StagesAvailable": ["Original", "Processed"]})


def _get_template_summary(self: CloudFormationResponse) -> ActionResult:
    stack_name = self._get_param("StackName")
    if stack_name:
        body = backend().find(self.region, stack_name).body
    else:
        body = backend().template_text(
            _request(self, "TemplateBody", "TemplateURL"), lambda url: _read_template_url(self, url), lambda: ""
        )
    doc = loads(body, "the template")
    parameters = [
        {"ParameterKey": k, "ParameterType": str(v.get("Type", "String")), "NoEcho": bool(v.get("NoEcho", False)),
         "Description": str(v.get("Description", "")),
         **({"DefaultValue": str(v["Default"])} if "Default" in v else {})}
        for k, v in (doc.get("Parameters") or {}).items()
    ]  # fmt: skip
    types = sorted({str(r.get("Type")) for r in (doc.get("Resources") or {}).values()})
    transforms = doc.get("Transform")
    return ActionResult({
        "Parameters": parameters, "ResourceTypes": types, "Version": str(doc.get("AWSTemplateFormatVersion", "")),
        "DeclaredTransforms": transforms if isinstance(transforms, list) else ([transforms] if transforms else []),
        **({"Description": str(doc["Description"])} if "Description" in doc else {}),
    })  # fmt: skip


_ACTIONS: dict[str, Callable[..., Any]] = {
    "create_change_set": _create_change_set,
    "describe_change_set": _describe_change_set,
    "list_change_sets": _list_change_sets,
    "delete_change_set": _delete_change_set,
    "execute_change_set": _execute_change_set,
    "describe_stacks": _describe_stacks,
    "describe_stack_events": _describe_stack_events,
    "list_stack_resources": _list_stack_resources,
    "describe_stack_resources": _describe_stack_resources,
    "describe_stack_resource": _describe_stack_resource,
    "get_template": _get_template,
    "get_template_summary": _get_template_summary,
}
_ORIGINAL: dict[str, Any] = {}
_ORIGINAL_TRANSFORMERS: dict[str, Any] = {}


def install(provider: Provider, account: str = "123456789012") -> CloudFormationBackend:
    """Serve the stack lifecycle from the twin's provisioner (idempotent; a new provider replaces the old)."""
    backend_ = set_provider(provider, account)
    assert backend_ is not None
    for name, action in _ACTIONS.items():
        _ORIGINAL.setdefault(name, getattr(CloudFormationResponse, name))
        setattr(CloudFormationResponse, name, action)
    # moto reshapes some of its own results (dicts of tags and parameters into lists); ours are in API shape
    if not _ORIGINAL_TRANSFORMERS:
        _ORIGINAL_TRANSFORMERS.update(CloudFormationResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER)
    transformers = dict(CloudFormationResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER)
    for key in ("DescribeChangeSetOutput.Changes", "DescribeChangeSetOutput.Parameters",
                "DescribeStacksOutput.Stacks.Stack.Tags"):  # fmt: skip
        transformers.pop(key, None)
    CloudFormationResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER = transformers
    return backend_


def uninstall() -> None:
    """moto's own CloudFormation again (an in-process user, e.g. a one-region setup, ends)."""
    for name, original in _ORIGINAL.items():
        setattr(CloudFormationResponse, name, original)
    if _ORIGINAL_TRANSFORMERS:
        CloudFormationResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER = dict(_ORIGINAL_TRANSFORMERS)
    set_provider(None)

"""Change sets and stacks as CloudFormation keeps them, for the twin: what a request may change, and its execution.

The backend behind the twin's CloudFormation API (:mod:`tandem.twin.extensions.cloudformation`, which says
what each action checks and answers): one record per stack and change set, the SAM transform applied when a
change set is created, and the processed template provisioned by the twin's provisioner on a background thread.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.cloudformation.exceptions import ValidationError
from moto.core.exceptions import ServiceException

from tandem.sam.transform import declares_sam, translate
from tandem.template import TemplateError, loads
from tandem.twin.provision import Creator, Region, Stack, deploy_document, template_for

TEMPLATE_BODY_LIMIT = 51_200
TEMPLATE_URL_LIMIT = 1_000_000
NO_CHANGES = "The submitted information didn't contain changes. Submit different information to create a change set."
_IAM_TYPES = {"AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group",
              "AWS::IAM::InstanceProfile", "AWS::IAM::AccessKey"}  # fmt: skip
_NAMED_IAM = {"RoleName", "UserName", "GroupName", "ManagedPolicyName", "InstanceProfileName"}
#: transforms that add resources of their own (a nested stack): CloudFormation wants CAPABILITY_AUTO_EXPAND
EXPANDING_TRANSFORMS = ("AWS::SecretsManager-2020-07-23",)

#: region -> the region as the provisioner needs it and the creators of what lives outside moto
Provider = Callable[[str], tuple[Region, Mapping[str, Creator]]]


class InsufficientCapabilities(ServiceException):
    code = "InsufficientCapabilitiesException"


class AlreadyExists(ServiceException):
    code = "AlreadyExistsException"


class ChangeSetNotFound(ServiceException):
    code = "ChangeSetNotFound"


class InvalidChangeSetStatus(ServiceException):
    code = "InvalidChangeSetStatus"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ChangeSet:
    id: str
    name: str
    stack_id: str
    stack_name: str
    kind: str  # CREATE | UPDATE
    body: str
    parameters: dict[str, str]
    tags: dict[str, str]
    capabilities: list[str]
    description: str
    created: datetime = field(default_factory=_now)
    status: str = "CREATE_IN_PROGRESS"
    execution: str = "UNAVAILABLE"
    reason: str = ""
    processed: dict[str, Any] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ChangeSetId": self.id, "ChangeSetName": self.name, "StackId": self.stack_id,
            "StackName": self.stack_name, "CreationTime": self.created, "Status": self.status,
            "ExecutionStatus": self.execution, "Capabilities": self.capabilities,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()],
            "Tags": [{"Key": k, "Value": v} for k, v in self.tags.items()], "Changes": self.changes,
        }  # fmt: skip
        if self.description:
            out["Description"] = self.description
        if self.reason:
            out["StatusReason"] = self.reason
        return out


@dataclass
class StackRecord:
    """One stack: what CloudFormation shows of it, and the twin's provisioned state behind it."""

    id: str
    name: str
    region: str
    status: str = "REVIEW_IN_PROGRESS"
    reason: str = ""
    created: datetime = field(default_factory=_now)
    updated: datetime | None = None
    body: str = ""
    processed: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    description: str = ""
    deployed: Stack | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # newest first, as DescribeStackEvents lists them
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # logical id -> resource summary
    change_sets: dict[str, ChangeSet] = field(default_factory=dict)  # name -> change set
    last_change_set: str = ""

    def event(self, logical: str, kind: str, status: str, reason: str = "", physical: str = "") -> None:
        entry = {
            "StackId": self.id, "EventId": str(uuid.uuid4()), "StackName": self.name, "LogicalResourceId": logical,
            "PhysicalResourceId": physical, "ResourceType": kind, "Timestamp": _now(), "ResourceStatus": status,
        }  # fmt: skip
        if reason:
            entry["ResourceStatusReason"] = reason
        self.events.insert(0, entry)

    def stack_event(self, status: str, reason: str = "") -> None:
        self.status, self.reason = status, reason
        self.event(self.name, "AWS::CloudFormation::Stack", status, reason, self.id)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "StackId": self.id, "StackName": self.name, "CreationTime": self.created, "StackStatus": self.status,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()],
            "Tags": [{"Key": k, "Value": v} for k, v in self.tags.items()], "Capabilities": self.capabilities,
            "DisableRollback": False, "EnableTerminationProtection": False,
        }  # fmt: skip
        if self.updated is not None:
            out["LastUpdatedTime"] = self.updated
        if self.reason:
            out["StackStatusReason"] = self.reason
        if self.description:
            out["Description"] = self.description
        if self.last_change_set:
            out["ChangeSetId"] = self.last_change_set
        if self.deployed is not None and self.status not in {"REVIEW_IN_PROGRESS", "ROLLBACK_COMPLETE"}:
            outputs = self.deployed.template.active_outputs()
            out["Outputs"] = [
                {"OutputKey": key, "OutputValue": _text(value),
                 **({"Description": str(outputs[key]["Description"])} if "Description" in outputs[key] else {})}
                for key, value in self.deployed.outputs.items()
            ]  # fmt: skip
        return out


def _text_of(value: Any) -> str:
    """A template's scalar as CloudFormation passes it on (booleans lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


class CloudFormationBackend:
    """Every region's stacks; executions run on background threads, as CloudFormation's do."""

    def __init__(self, provider: Provider, account: str = "123456789012") -> None:
        self._provider = provider
        self._account = account
        self._lock = threading.RLock()
        self._stacks: dict[str, list[StackRecord]] = {}  # region -> stacks, deleted ones included (by id)
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lookups
    def find(self, region: str, name_or_id: str, *, deleted: bool = False) -> StackRecord:
        with self._lock:
            for stack in reversed(self._stacks.get(region, [])):
                live = stack.status != "DELETE_COMPLETE"
                if name_or_id == stack.id or (name_or_id == stack.name and (live or deleted)):
                    return stack
        raise ValidationError(message=f"Stack with id {name_or_id} does not exist")

    def live(self, region: str) -> list[StackRecord]:
        with self._lock:
            return [s for s in self._stacks.get(region, []) if s.status != "DELETE_COMPLETE"]

    def change_set(self, region: str, name_or_id: str, stack_name: str | None) -> tuple[StackRecord, ChangeSet]:
        with self._lock:
            stacks = [self.find(region, stack_name)] if stack_name else self.live(region)
            for stack in stacks:
                for change_set in stack.change_sets.values():
                    if name_or_id in (change_set.id, change_set.name):
                        return stack, change_set
        raise ChangeSetNotFound(f"ChangeSet [{name_or_id}] does not exist")

    # ------------------------------------------------------------------ change sets
    def create_change_set(
        self, region: str, request: dict[str, Any], read_url: Callable[[str], str]
    ) -> tuple[str, str]:
        name = str(request["StackName"])
        kind = str(request.get("ChangeSetType") or "UPDATE")
        body = self.template_text(request, read_url, lambda: self.find(region, name).body)
        try:
            doc = loads(body, "the template")
        except Exception as error:
            raise ValidationError(message=f"Template format error: {error}") from None
        with self._lock:
            existing = next((s for s in self.live(region) if s.name == name), None)
            if kind == "CREATE" and existing is not None and existing.status != "REVIEW_IN_PROGRESS":
                raise AlreadyExists(f"Stack [{name}] already exists")
            if kind == "UPDATE" and (existing is None or existing.status == "REVIEW_IN_PROGRESS"):
                raise ValidationError(message=f"Stack [{name}] does not exist")
            previous = existing.parameters if existing is not None else {}
            parameters = self._parameters(doc, request.get("Parameters") or [], previous)
            self._check_parameters(region, name, doc, parameters)
            stack = existing or self._new_stack(region, name)
            change_set = ChangeSet(
                id=f"arn:aws:cloudformation:{region}:{self._account}:changeSet/{request['ChangeSetName']}/{uuid.uuid4()}",
                name=str(request["ChangeSetName"]), stack_id=stack.id, stack_name=name, kind=kind, body=body,
                parameters=parameters, tags={t["Key"]: t["Value"] for t in request.get("Tags") or []},
                capabilities=list(request.get("Capabilities") or []), description=str(request.get("Description") or ""),
            )  # fmt: skip
            stack.change_sets[change_set.name] = change_set
        self._prepare(region, stack, change_set, doc)
        return change_set.id, stack.id

    def template_text(
        self, request: dict[str, Any], read_url: Callable[[str], str], previous: Callable[[], str]
    ) -> str:
        body, url = request.get("TemplateBody"), request.get("TemplateURL")
        if body is not None:
            if len(str(body).encode()) > TEMPLATE_BODY_LIMIT:
                raise ValidationError(
                    message="1 validation error detected: Value at 'templateBody' failed to satisfy constraint: "
                    f"Member must have length less than or equal to {TEMPLATE_BODY_LIMIT}"
                )
            return str(body)
        if url:
            text = read_url(str(url))
            if len(text.encode()) > TEMPLATE_URL_LIMIT:
                raise ValidationError(message=f"Template may not exceed {TEMPLATE_URL_LIMIT} bytes in size.")
            return text
        if str(request.get("UsePreviousTemplate", "")).lower() == "true":
            return previous()
        raise ValidationError(message="Either Template URL or Template Body must be specified.")

    @staticmethod
    def _parameters(doc: dict[str, Any], given: list[dict[str, Any]], previous: dict[str, str]) -> dict[str, str]:
        declared = doc.get("Parameters") or {}
        unknown = [str(p["ParameterKey"]) for p in given if p["ParameterKey"] not in declared]
        if unknown:
            raise ValidationError(message=f"Parameters: [{', '.join(unknown)}] do not exist in the template")
        values: dict[str, str] = {}
        for p in given:
            key = str(p["ParameterKey"])
            if str(p.get("UsePreviousValue", "")).lower() == "true":
                if key not in previous:
                    raise ValidationError(
                        message=f"Invalid input for parameter key {key}. Cannot specify usePreviousValue as true "
                        "for a parameter key not in the previous template"
                    )
                values[key] = previous[key]
            else:
                values[key] = str(p.get("ParameterValue", ""))
        missing = [k for k, spec in declared.items() if k not in values and "Default" not in spec]
        if missing:
            raise ValidationError(message=f"Parameters: [{', '.join(missing)}] must have values")
        for key, spec in declared.items():  # a stack holds every parameter's value, defaults included
            default = spec.get("Default")
            if key not in values and default is not None:
                values[key] = ",".join(map(str, default)) if isinstance(default, list) else _text_of(default)
        return values

    def _check_parameters(self, region: str, name: str, doc: dict[str, Any], parameters: dict[str, str]) -> None:
        where, _ = self._provider(region)
        tpl = template_for(doc, where, name, parameters)
        try:
            for key in doc.get("Parameters") or {}:
                tpl.parameter_value(key)
            tpl.validate()
        except TemplateError as error:
            raise ValidationError(message=str(error)) from None
        if not declares_sam(doc):  # a transform's output is checked once it exists
            try:
                tpl.deployment_order()
            except TemplateError as error:
                raise ValidationError(message=f"Template format error: {error}") from None

    def _new_stack(self, region: str, name: str) -> StackRecord:
        stack = StackRecord(
            id=f"arn:aws:cloudformation:{region}:{self._account}:stack/{name}/{uuid.uuid4()}", name=name, region=region
        )
        stack.stack_event("REVIEW_IN_PROGRESS", "User Initiated")
        self._stacks.setdefault(region, []).append(stack)
        return stack

    def _prepare(self, region: str, stack: StackRecord, change_set: ChangeSet, doc: dict[str, Any]) -> None:
        """The transform and the list of changes (synchronously: the twin has no queue to wait in)."""
        try:
            processed = (
                translate(doc, change_set.parameters, region=region, account=self._account)
                if declares_sam(doc)
                else copy.deepcopy(doc)
            )
        except TemplateError as error:
            self._fail(change_set, str(error))
            return
        needed = _capabilities(processed)
        if needed - set(change_set.capabilities):
            self._fail(change_set, f"Requires capabilities : [{', '.join(sorted(needed))}]")
            return
        change_set.processed = processed
        changed = {k for k in set(change_set.parameters) | set(stack.parameters)
                   if change_set.parameters.get(k) != stack.parameters.get(k)}  # fmt: skip
        before = stack.processed if change_set.kind == "UPDATE" else {}
        change_set.changes = _changes(before, processed, changed)
        same_parameters = change_set.parameters == stack.parameters and self._ssm_unchanged(region, stack)
        if change_set.kind == "UPDATE" and not change_set.changes and same_parameters and change_set.body == stack.body:
            self._fail(change_set, NO_CHANGES)
            return
        change_set.status, change_set.execution = "CREATE_COMPLETE", "AVAILABLE"

    def _ssm_unchanged(self, region: str, stack: StackRecord) -> bool:
        """CloudFormation reads SSM-typed parameters on every change set: a new value there is a change."""
        if stack.deployed is None:
            return False
        where, _ = self._provider(region)
        fresh = template_for(stack.deployed.template.doc, where, stack.name, stack.parameters)
        try:
            return all(
                fresh.parameter_value(k) == stack.deployed.template.parameter_value(k)
                for k in stack.deployed.template.doc.get("Parameters") or {}
            )
        except TemplateError:
            return False

    @staticmethod
    def _fail(change_set: ChangeSet, reason: str) -> None:
        change_set.status, change_set.execution, change_set.reason = "FAILED", "UNAVAILABLE", reason

    def delete_change_set(self, region: str, name_or_id: str, stack_name: str | None) -> None:
        with self._lock:
            stack, change_set = self.change_set(region, name_or_id, stack_name)
            if change_set.execution == "EXECUTE_IN_PROGRESS":
                raise InvalidChangeSetStatus(f"ChangeSet [{change_set.id}] cannot be deleted while it executes")
            del stack.change_sets[change_set.name]

    # ------------------------------------------------------------------ execution
    def execute(self, region: str, name_or_id: str, stack_name: str | None) -> None:
        with self._lock:
            stack, change_set = self.change_set(region, name_or_id, stack_name)
            if change_set.execution != "AVAILABLE":
                raise InvalidChangeSetStatus(
                    f"ChangeSet [{change_set.id}] cannot be executed in its current status of [{change_set.status}]"
                )
            if stack.status.endswith("_IN_PROGRESS") and stack.status != "REVIEW_IN_PROGRESS":
                raise ValidationError(message=f"Stack:{stack.id} is in {stack.status} state and can not be updated.")
            change_set.execution = "EXECUTE_IN_PROGRESS"
            verb = "CREATE" if change_set.kind == "CREATE" else "UPDATE"
            stack.stack_event(f"{verb}_IN_PROGRESS", "User Initiated")
            thread = threading.Thread(
                target=self._run, args=(region, stack, change_set), name=f"cfn-{stack.name}", daemon=True
            )
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _run(self, region: str, stack: StackRecord, change_set: ChangeSet) -> None:
        verb = "CREATE" if change_set.kind == "CREATE" else "UPDATE"
        where, creators = self._provider(region)

        def progress(logical: str, kind: str, status: str, reason: str) -> None:
            with self._lock:
                physical = ""
                if stack.deployed is not None and logical in stack.deployed.physical:
                    physical = str(stack.deployed.physical[logical].get("Ref", ""))
                stack.event(logical, kind, status, reason, physical)

        try:
            deployed = deploy_document(
                copy.deepcopy(change_set.processed), where, stack.name, change_set.parameters,
                previous=stack.deployed, creators=creators, progress=progress,
            )  # fmt: skip
        except Exception as error:
            with self._lock:
                change_set.execution = "EXECUTE_FAILED"
                stack.stack_event(
                    "ROLLBACK_IN_PROGRESS" if verb == "CREATE" else "UPDATE_ROLLBACK_IN_PROGRESS",
                    f"The following resource(s) failed to {verb.lower()}: {error}",
                )
                stack.stack_event("ROLLBACK_COMPLETE" if verb == "CREATE" else "UPDATE_ROLLBACK_COMPLETE")
            return
        with self._lock:
            now = _now()
            active = deployed.template.active_resources()
            stack.resources = {
                logical: {
                    "LogicalResourceId": logical, "PhysicalResourceId": str(attributes.get("Ref", "")),
                    "ResourceType": str(active[logical]["Type"]), "ResourceStatus": f"{verb}_COMPLETE",
                    "LastUpdatedTimestamp": now,
                }
                for logical, attributes in deployed.physical.items()
                if logical in active
            }  # fmt: skip
            stack.deployed, stack.body, stack.processed = deployed, change_set.body, change_set.processed
            stack.parameters, stack.tags = dict(change_set.parameters), dict(change_set.tags)
            stack.capabilities = change_set.capabilities
            stack.description = str(change_set.processed.get("Description", ""))
            stack.last_change_set = change_set.id
            if verb == "UPDATE":
                stack.updated = now
            change_set.execution = "EXECUTE_COMPLETE"
            stack.stack_event(f"{verb}_COMPLETE")

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Every execution finished (the twin's stop, tests)."""
        for thread in list(self._threads):
            thread.join(timeout)


def _capabilities(processed: dict[str, Any]) -> set[str]:
    needed: set[str] = set()
    for resource in (processed.get("Resources") or {}).values():
        if resource.get("Type") in _IAM_TYPES:
            named = _NAMED_IAM & set(resource.get("Properties") or {})
            needed.add("CAPABILITY_NAMED_IAM" if named else "CAPABILITY_IAM")
    if "CAPABILITY_NAMED_IAM" in needed:
        needed.discard("CAPABILITY_IAM")
    transform = processed.get("Transform")
    if set(transform if isinstance(transform, list) else [transform]) & set(EXPANDING_TRANSFORMS):
        needed.add("CAPABILITY_AUTO_EXPAND")
    return needed


def _changes(before: dict[str, Any], after: dict[str, Any], parameters: set[str]) -> list[dict[str, Any]]:
    """The change set's resource changes by logical id: Add, Remove, and Modify where the definition differs or
    names a parameter whose value changed (``Ref`` or ``${Name}``)."""
    old, new = before.get("Resources") or {}, after.get("Resources") or {}
    changes = []
    for logical in sorted(set(old) | set(new)):
        if logical not in old:
            action, kind = "Add", new[logical]["Type"]
        elif logical not in new:
            action, kind = "Remove", old[logical]["Type"]
        elif json.dumps(old[logical], sort_keys=True) != json.dumps(new[logical], sort_keys=True) or any(
            f'{{"Ref": "{p}"}}' in json.dumps(new[logical]) or f"${{{p}}}" in json.dumps(new[logical])
            for p in parameters
        ):
            action, kind = "Modify", new[logical]["Type"]
        else:
            continue
        change: dict[str, Any] = {"Action": action, "LogicalResourceId": logical, "ResourceType": kind}
        if action == "Modify":
            change["Replacement"] = "Conditional"
        changes.append({"Type": "Resource", "ResourceChange": change})
    return changes

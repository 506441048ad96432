"""The Lambda runtime as the twin has it: which functions exist, their environment, how a handler is loaded.

**One function registry**, read from ``template.yaml``: every ``AWS::Serverless::Function`` and its
``Handler``. A function is named after its logical id in snake case without the ``Function`` suffix
(``TransactionProcessorFunction`` is ``transaction_processor``; the twin names the ``AWS::Lambda::Function``
SAM's transform makes of it the same way). ``tandem invoke``, the tests and the bench take functions from
here, so adding one to the template is the only edit it needs to run locally.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.template import APP_TEMPLATE, ROOT, Template, TemplateError, load

#: Credentials the emulator accepts (any would do); never used against AWS.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the app: its name (the handler's package), logical id and handler path."""

    name: str
    logical_id: str
    handler: str

    @property
    def module(self) -> str:
        return self.handler.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        return self.handler.rpartition(".")[2]


@functools.cache
def functions(path: Path = APP_TEMPLATE) -> dict[str, FunctionSpec]:
    """Every function the template at ``path`` declares, by name."""
    return functions_of(load(path))


def functions_of(doc: dict[str, Any]) -> dict[str, FunctionSpec]:
    """Every function a loaded template declares, by name."""
    handler_default = doc.get("Globals", {}).get("Function", {}).get("Handler")
    found: dict[str, FunctionSpec] = {}
    for logical_id, resource in doc["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        handler = resource.get("Properties", {}).get("Handler", handler_default)
        if not isinstance(handler, str) or handler.count(".") < 1:
            raise TemplateError(f"{logical_id}: Handler must be 'package.module.function', got {handler!r}")
        found[snake_name(logical_id)] = FunctionSpec(snake_name(logical_id), logical_id, handler)
    return found


def snake_name(logical_id: str) -> str:
    """``ReplicationMonitorAuroraFunction`` -> ``replication_monitor_aurora``."""
    stem = logical_id.removesuffix("Function") or logical_id
    return re.sub(r"(?<!^)(?=[A-Z])", "_", stem).lower()


def function(name: str) -> FunctionSpec:
    try:
        return functions()[name]
    except KeyError:
        raise ValueError(f"unknown function {name!r}; template.yaml has {', '.join(sorted(functions()))}") from None


def lambda_environment(template: Template, spec: FunctionSpec, endpoint: str) -> dict[str, str]:
    """The environment Lambda gives ``spec`` of a SAM template in the template's region (in-process runs:
    ``tandem invoke``, tests): the template's variables plus the runtime's own, at ``endpoint``."""
    props = template.properties(spec.logical_id)
    memory = props.get("MemorySize", template.doc.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    return runtime_environment(
        template.region, function_name(template, spec), template.function_environment(spec.logical_id),
        memory=int(template.resolve(memory)), endpoint=endpoint, snap_start=snap_start(template, spec),
        task_root=ROOT / "src",
    )  # fmt: skip


def runtime_environment(
    region: str,
    name: str,
    variables: dict[str, str],
    *,
    memory: int,
    endpoint: str,
    snap_start: bool,
    task_root: Path,
) -> dict[str, str]:
    """What Lambda's Python runtime sets besides the function's own ``variables``, pointed at ``endpoint`` the
    standard way (AWS_ENDPOINT_URL); ``snap_start``: the version runs restored from a snapshot."""
    return {
        **variables,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start" if snap_start else "on-demand",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
        **FAKE_CREDENTIALS,
    }


def _own_or_global(template: Template, spec: FunctionSpec, key: str) -> Any:
    """A function property as SAM reads it: the function's own, else the ``Globals`` one (unresolved)."""
    defaults = template.doc.get("Globals", {}).get("Function", {})
    return template.properties(spec.logical_id).get(key, defaults.get(key))


def published_alias(template: Template, spec: FunctionSpec) -> str | None:
    """The alias SAM's ``AutoPublishAlias`` moves to each published version (its events invoke it), if any."""
    alias = template.resolve(_own_or_global(template, spec, "AutoPublishAlias"))
    return str(alias) if alias else None


def snap_start(template: Template, spec: FunctionSpec) -> bool:
    """Whether Lambda resumes the function from a snapshot: ``SnapStart.ApplyOn: PublishedVersions`` (its own or the
    Globals') with a published version behind its events (``AutoPublishAlias``); the twin's workers then run the
    SnapStart hooks (:mod:`tandem.snapstart`)."""
    snap = _own_or_global(template, spec, "SnapStart") or {}
    apply_on = template.resolve(snap.get("ApplyOn", "None"))
    return published_alias(template, spec) is not None and apply_on == "PublishedVersions"


def function_name(template: Template, spec: FunctionSpec) -> str:
    """The deployed function's name: the template's FunctionName, else what SAM would generate."""
    declared = template.properties(spec.logical_id).get("FunctionName")
    if declared is not None:
        return str(template.resolve(declared))
    return f"{template.resolve({'Ref': 'AWS::StackName'})}-{spec.logical_id}"


def name_in_arn(name_or_arn: str) -> str:
    """The function's name in a name or a (partial, qualified) ARN: ``...:function:NAME[:version or alias]``."""
    return name_or_arn.split(":function:", 1)[-1].split(":", 1)[0]


@dataclass
class LambdaContext:
    """The attributes of the runtime's context object that handlers and Powertools read."""

    function_name: str
    region: str
    timeout_s: float = 30.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.invoked_function_arn = f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(function_or_spec: str | FunctionSpec) -> Callable[[dict[str, Any], Any], Any]:
    """Import the handler as a new execution environment would (a cold start).

    Lambda imports the module in a fresh process with the function's environment already set; the twin's
    workers do exactly that. In-process callers (tests) set the environment first; the module is then
    (re)imported and the cached AWS clients dropped, so module-level state reflects this environment.
    """
    spec = function_or_spec if isinstance(function_or_spec, FunctionSpec) else function(function_or_spec)
    from tandem_core import clients

    clients.client.cache_clear()
    clients.session.cache_clear()  # a new environment resolves its credentials afresh
    module = sys.modules.get(spec.module)
    module = importlib.reload(module) if module is not None else importlib.import_module(spec.module)
    handler: Callable[[dict[str, Any], Any], Any] = getattr(module, spec.attribute)
    return handler

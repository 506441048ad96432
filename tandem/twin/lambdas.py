"""The twin's Lambda service: the functions CloudFormation deploys, their versions, aliases, event sources.

The provisioner's creators for what AWS's SAM transform makes of a function (``AWS::Lambda::Function``,
``Version``, ``Alias``, ``EventSourceMapping``, ``EventInvokeConfig``, ``Permission``) register each in moto
(whose state the failover handler and the operator flip through the real API) and keep, per function, the
configuration Lambda would run: ``$LATEST`` as the stack last set it, and each published version as it was
when published. A function's invocations run the configuration its alias points at (everything that invokes
an aliased function names the alias), else ``$LATEST``: like Lambda, a configuration change that publishes no
version does not reach the alias. One worker per (region, function) runs it, with the code its stack
deployed (the package in S3, unpacked) and its own Timeout and MemorySize. moto never runs code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.lambda_runtime import FunctionSpec, functions, name_in_arn, runtime_environment, snake_name
from tandem.template import ROOT
from tandem.twin.provision import Creator, Deployment, typed_for
from tandem.twin.worker import Worker

log = logging.getLogger("tandem.twin")


@dataclass(frozen=True)
class Configuration:
    """What one version of a function runs with (Lambda freezes it when the version is published)."""

    spec: FunctionSpec
    name: str
    variables: tuple[tuple[str, str], ...]
    timeout: float
    memory: int
    snap_start: bool
    code_dir: Path

    def environment(self, region: str, endpoint: str, *, published: bool) -> dict[str, str]:
        return runtime_environment(
            region, self.name, dict(self.variables), memory=self.memory, endpoint=endpoint,
            snap_start=self.snap_start and published, task_root=self.code_dir,
        )  # fmt: skip


class LambdaService:
    """All functions of all regions: who they are (by ARN or name), their versions, the worker that runs each."""

    def __init__(
        self,
        state_dir: Path | None,
        endpoint_of: Callable[[str], str],
        on_output: Callable[[str, str], None] | None = None,
    ) -> None:
        """``state_dir`` None: register functions and their environments, start no workers (in-process tests).
        ``on_output(region, line)`` every line a function prints (the log service)."""
        self._state_dir = state_dir
        self._on_output = on_output
        self._endpoint_of = endpoint_of
        self._lock = threading.RLock()
        self.workers: dict[tuple[str, str], Worker] = {}  # (region, function) -> worker
        self.environments: dict[tuple[str, str], dict[str, str]] = {}  # (region, function) -> what its worker runs
        self._names: dict[tuple[str, str], str] = {}  # (region, deployed name) -> function
        self.aliases: dict[tuple[str, str], str] = {}  # (region, function) -> its alias's ARN
        #: (region, function) -> EventInvokeConfig's MaximumRetryAttempts (Lambda's default: 2)
        self.async_retries: dict[tuple[str, str], int] = {}
        self._latest: dict[tuple[str, str], Configuration] = {}
        self._versions: dict[tuple[str, str, str], Configuration] = {}  # (region, function, version) -> config
        self._alias_version: dict[tuple[str, str], str] = {}  # (region, function) -> the alias's version
        self._running: dict[tuple[str, str], tuple[Configuration, bool]] = {}  # what each worker was built with

    def creators(self) -> dict[str, Creator]:
        """The provisioner's creators for the resources AWS's SAM transform makes of a function."""
        return {
            "AWS::Lambda::Function": self.create_function,
            "AWS::Lambda::Version": self.publish_version,
            "AWS::Lambda::Alias": self.point_alias,
            "AWS::Lambda::EventSourceMapping": self.map_event_source,
            "AWS::Lambda::EventInvokeConfig": self.configure_async,
            "AWS::Lambda::Permission": self.add_permission,
        }

    # ------------------------------------------------------------------ creators
    def create_function(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
        region, lam = d.region.name, d.client("lambda")
        spec = FunctionSpec(snake_name(logical), logical, str(props["Handler"]))
        name = str(props.get("FunctionName") or d.name_for(logical, 64))
        variables = {str(k): str(v) for k, v in ((props.get("Environment") or {}).get("Variables") or {}).items()}
        config = typed_for(lam, "CreateFunction", {
            "Runtime": str(props.get("Runtime", "python3.12")), "Role": str(props["Role"]), "Handler": spec.handler,
            "Environment": {"Variables": variables}, "Timeout": props.get("Timeout", 3),
            "MemorySize": props.get("MemorySize", 128),
            "SnapStart": {"ApplyOn": str((props.get("SnapStart") or {}).get("ApplyOn", "None"))},
        })  # fmt: skip
        code = _code_of(props)
        if logical not in d.template.physical:
            architectures = [str(a) for a in props.get("Architectures", ["x86_64"])]
            lam.create_function(FunctionName=name, Code=code, Architectures=architectures, **config)
        else:
            lam.update_function_configuration(FunctionName=name, **config)
            lam.update_function_code(FunctionName=name, **code)
        arn = str(lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"])
        apply_on = config["SnapStart"]["ApplyOn"]
        latest = Configuration(
            spec, name, tuple(sorted(variables.items())), float(config["Timeout"]), int(config["MemorySize"]),
            apply_on == "PublishedVersions", self._unpacked(d, code),
        )  # fmt: skip
        with self._lock:
            self._names[(region, name)] = spec.name
            self._latest[(region, spec.name)] = latest
            self.async_retries.setdefault((region, spec.name), 2)
        self._refresh(region, spec.name)
        return {"Ref": name, "Arn": arn}

    def publish_version(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
        """A version is immutable: CloudFormation publishes one when the Version resource is new (SAM names it
        after a hash of what should make a new one), never again for the same logical id."""
        if logical in d.template.physical:
            return d.template.physical[logical]
        region, name = d.region.name, name_in_arn(str(props["FunctionName"]))
        published = d.client("lambda").publish_version(FunctionName=name)
        function = self.function_of(region, name)
        with self._lock:
            self._versions[(region, function, str(published["Version"]))] = self._latest[(region, function)]
        return {"Ref": str(published["FunctionArn"]), "Version": str(published["Version"])}

    def point_alias(self, d: Deployment, _logical: str, props: dict[str, Any]) -> dict[str, str]:
        region, lam = d.region.name, d.client("lambda")
        name, alias, version = (
            name_in_arn(str(props["FunctionName"])),
            str(props["Name"]),
            str(props["FunctionVersion"]),
        )
        try:
            reply = lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=version)
        except lam.exceptions.ResourceNotFoundException:
            reply = lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)
        function = self.function_of(region, name)
        with self._lock:
            self.aliases[(region, function)] = str(reply["AliasArn"])
            self._alias_version[(region, function)] = version
        self._refresh(region, function)
        return {"Ref": str(reply["AliasArn"])}

    def map_event_source(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
        """Create the mapping, or on a redeploy re-send every property, as CloudFormation does for a resource
        it updates (the twin updates every resource on every deploy: the strictest case for a live state)."""
        lam = d.client("lambda")
        keys = ("FunctionName", "BatchSize", "Enabled", "MaximumBatchingWindowInSeconds", "ScalingConfig",
                "FunctionResponseTypes")  # fmt: skip
        args = typed_for(lam, "UpdateEventSourceMapping", {k: props[k] for k in keys if k in props})
        if logical in d.template.physical:
            lam.update_event_source_mapping(UUID=d.template.physical[logical]["Ref"], **args)
            return d.template.physical[logical]
        mapping = lam.create_event_source_mapping(EventSourceArn=str(props["EventSourceArn"]), **args)
        return {"Ref": str(mapping["UUID"])}

    def configure_async(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
        region, lam = d.region.name, d.client("lambda")
        name = name_in_arn(str(props["FunctionName"]))
        args = typed_for(lam, "PutFunctionEventInvokeConfig", {k: v for k, v in props.items() if k != "FunctionName"})
        lam.put_function_event_invoke_config(FunctionName=name, **args)
        with self._lock:
            self.async_retries[(region, self.function_of(region, name))] = int(args.get("MaximumRetryAttempts", 2))
        return {"Ref": d.name_for(logical)}

    def add_permission(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
        """The function's resource policy statement (who may invoke it: EventBridge for a rule, API Gateway)."""
        lam = d.client("lambda")
        name = name_in_arn(str(props["FunctionName"]))
        statement = {k: str(props[k]) for k in ("Action", "Principal", "SourceArn", "SourceAccount") if k in props}
        try:
            lam.add_permission(FunctionName=name, StatementId=logical, **statement)
        except lam.exceptions.ResourceConflictException:  # a redeploy: the statement is there
            lam.remove_permission(FunctionName=name, StatementId=logical)
            lam.add_permission(FunctionName=name, StatementId=logical, **statement)
        return {"Ref": logical}

    # ------------------------------------------------------------------ running
    def _refresh(self, region: str, function: str) -> None:
        """Start (or replace) the function's worker when what its invocations should run changed."""
        key = (region, function)
        with self._lock:
            version = self._alias_version.get(key)
            config = self._versions.get((region, function, version)) if version else None
            published = config is not None
            config = config or self._latest[key]
            environment = config.environment(region, self._endpoint_of(region), published=published)
            self.environments[key] = environment
            if self._running.get(key) == (config, published):
                return
            self._running[key] = (config, published)
            if self._state_dir is None:
                return
            old = self.workers.get(key)
            self.workers[key] = Worker(
                config.spec, region, environment, self._state_dir / f"{function}-{region}.log", self._on_output,
                code_dir=config.code_dir, timeout=config.timeout,
            )  # fmt: skip
        if old is not None:
            old.stop()  # a new configuration starts new execution environments

    def _unpacked(self, d: Deployment, code: dict[str, Any]) -> Path:
        """The deployment package, unpacked once per content (what the worker runs); the repository's ``src/``
        for an in-process region without workers."""
        if self._state_dir is None:
            return ROOT / "src"
        if "ZipFile" in code:
            package = bytes(code["ZipFile"])
        else:
            package = d.client("s3").get_object(Bucket=code["S3Bucket"], Key=code["S3Key"])["Body"].read()
        directory = self._state_dir / "code" / hashlib.sha256(package).hexdigest()[:16]
        if not directory.is_dir():
            partial = directory.with_suffix(".partial")
            with zipfile.ZipFile(io.BytesIO(package)) as archive:
                archive.extractall(partial)
            partial.rename(directory)
        return directory

    def function_of(self, region: str, name_or_arn: str) -> str:
        """Our function's name (``transaction_processor``) behind a deployed name or ARN in ``region``."""
        name = name_in_arn(name_or_arn)
        try:
            return self._names[(region, name)]
        except KeyError:
            raise ValueError(f"no twin function {name_or_arn!r} in {region}") from None

    def deployed_name(self, region: str, function: str) -> str:
        return next(n for (r, n), f in self._names.items() if r == region and f == function)

    def worker(self, region: str, function: str) -> Worker:
        try:
            return self.workers[(region, function)]
        except KeyError:
            raise ValueError(
                f"unknown function {function!r}; template.yaml has {', '.join(sorted(functions()))}"
            ) from None

    def stop(self, grace: float = 2.0) -> None:
        """Every execution environment at once: EOF to all, ``grace`` seconds for runs to end, then kill."""
        for worker in self.workers.values():
            worker.begin_stop()
        deadline = time.monotonic() + grace
        for worker in self.workers.values():
            worker.finish_stop(deadline)


def _code_of(props: dict[str, Any]) -> dict[str, Any]:
    """The function's Code as the Lambda API takes it (S3 location, or an inline ZipFile made a package)."""
    code = props["Code"]
    if "ZipFile" in code:  # CloudFormation's inline source: one index file
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("index.py", str(code["ZipFile"]))
        return {"ZipFile": buf.getvalue()}
    return {k: str(code[k]) for k in ("S3Bucket", "S3Key", "S3ObjectVersion") if k in code}


class AsyncInvocations:
    """Lambda's asynchronous invocation (EventBridge targets): the caller never waits for the function.

    Each function has at most one event waiting behind the one running; another event arriving meanwhile is
    dropped and logged as throttled. On a compressed clock a schedule can fire faster than a real handler
    runs, and an unbounded queue would only make the twin fall ever further behind its own clock.

    An event whose invocation ends in a function error (an exception, the runtime dying) is retried as
    Lambda does: ``retries_of(region, function)`` more times (the function's EventInvokeConfig), after
    ``retry_delays`` (Lambda's one and two minutes, on the twin's clock). A retry is never throttled.
    """

    def __init__(
        self,
        invoke: Callable[[str, str, dict[str, Any]], dict[str, Any]],
        retries_of: Callable[[str, str], int] = lambda _region, _function: 0,
        retry_delays: tuple[float, ...] = (60.0, 120.0),
        max_workers: int = 4,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._invoke = invoke
        self._retries_of = retries_of
        self._retry_delays = retry_delays
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="twin-async")
        self._lock = threading.Lock()
        self._waiting: set[tuple[str, str]] = set()
        self._timers: set[threading.Timer] = set()
        self._stopped = False
        self.throttled = 0
        self.retried = 0

    def submit(self, region: str, function: str, event: dict[str, Any]) -> bool:
        key = (region, function)
        with self._lock:
            if key in self._waiting:
                self.throttled += 1
                return False
            self._waiting.add(key)
        self._pool.submit(self._run, key, event, 0)
        return True

    def _run(self, key: tuple[str, str], event: dict[str, Any], attempt: int) -> None:
        if attempt == 0:
            with self._lock:
                self._waiting.discard(key)  # from now on the next event may wait behind this one
        reply = self._invoke(key[0], key[1], event)
        if reply.get("ok"):
            return
        retries = min(self._retries_of(*key), len(self._retry_delays))
        if attempt >= retries:
            log.warning("asynchronous invocation of %s in %s failed, no retry left: %s", key[1], key[0], reply)
            return
        delay = self._retry_delays[attempt]
        log.warning("asynchronous invocation of %s in %s failed (%s); retry %d in %.3g s",
                    key[1], key[0], reply.get("errorType"), attempt + 1, delay)  # fmt: skip
        timer = threading.Timer(delay, self._retry, (key, event, attempt + 1))
        timer.daemon = True
        with self._lock:
            if self._stopped:
                return
            self._timers.add(timer)
        timer.start()

    def _retry(self, key: tuple[str, str], event: dict[str, Any], attempt: int) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
            if self._stopped:
                return
            self.retried += 1
        self._pool.submit(self._run, key, event, attempt)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)  # running ones end when their worker is stopped

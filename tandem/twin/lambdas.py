"""The twin's Lambda service: the template's functions, their event sources and rules, run by workers.

:meth:`LambdaService.create_function` is the provisioner's creator for ``AWS::Serverless::Function``: it
registers the function, its SQS event source mappings and its schedule/pattern rules in moto (whose state
the failover handler and the operator flip through the real API), and starts one worker per function with
the environment Lambda would give it. moto never runs code; invocations go to the workers.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tandem.lambda_runtime import (
    function_name,
    functions,
    lambda_environment,
    name_in_arn,
    published_alias,
    spec_of,
)
from tandem.twin.provision import Deployment
from tandem.twin.rules import rules_of_function
from tandem.twin.worker import Worker

FUNCTION_ROLE = "tandem-twin-function"
log = logging.getLogger("tandem.twin")


class LambdaService:
    """All functions of all regions: who they are (by ARN or name) and the worker that runs each."""

    def __init__(
        self,
        state_dir: Path | None,
        endpoint_of: Callable[[str], str],
        http_route: Callable[[str, str, str, str], None] | None = None,
        on_output: Callable[[str, str], None] | None = None,
    ) -> None:
        """``state_dir`` None: register functions and their environments, start no workers (in-process tests).
        ``http_route(region, method, path, function)`` receives the functions' HttpApi events (the ingress);
        ``on_output(region, line)`` every line a function prints (the log service)."""
        self._state_dir = state_dir
        self._on_output = on_output
        self._http_route = http_route
        self._endpoint_of = endpoint_of
        self._lock = threading.Lock()
        self.workers: dict[tuple[str, str], Worker] = {}  # (region, function) -> worker
        self.environments: dict[tuple[str, str], dict[str, str]] = {}  # (region, function) -> Lambda's env
        self._names: dict[tuple[str, str], str] = {}  # (region, deployed name) -> function
        self.aliases: dict[tuple[str, str], str] = {}  # (region, function) -> its AutoPublishAlias's ARN
        #: (region, function) -> EventInvokeConfig's MaximumRetryAttempts (Lambda's default: 2)
        self.async_retries: dict[tuple[str, str], int] = {}

    def create_function(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
        spec = spec_of(d.template.doc, logical)
        region = d.region.name
        name = function_name(d.template, spec)
        lam = d.client("lambda")
        variables = {"Variables": d.template.function_environment(logical)}  # what GetFunctionConfiguration shows
        if logical not in d.template.physical:
            lam.create_function(
                FunctionName=name, Runtime=str(props.get("Runtime", "python3.12")), Role=_role(d),
                Handler=spec.handler, Code={"ZipFile": _placeholder_zip()}, Environment=variables,
                Architectures=[str(a) for a in props.get("Architectures", ["x86_64"])],
            )  # fmt: skip
        else:
            lam.update_function_configuration(FunctionName=name, Environment=variables)
        arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
        published = _publish_alias(lam, name, published_alias(d.template, spec))
        target = published.get("Alias", name)  # what the mappings invoke: the alias if the function has one
        invoke_config = props.get("EventInvokeConfig") or {}
        retries = int(invoke_config.get("MaximumRetryAttempts", 2))
        lam.put_function_event_invoke_config(
            FunctionName=name, MaximumRetryAttempts=retries,
            MaximumEventAgeInSeconds=int(invoke_config.get("MaximumEventAgeInSeconds", 21600)),
        )  # fmt: skip
        for event_name, event in props.get("Events", {}).items():
            if event.get("Type") == "SQS":
                self._sqs_mapping(d, f"{logical}{event_name}", target, event["Properties"])
            elif event.get("Type") == "HttpApi" and self._http_route is not None:
                ev = event["Properties"]
                self._http_route(region, str(ev.get("Method", "ANY")), str(ev["Path"]), spec.name)
        events = d.client("events")
        for rule in rules_of_function(d.template, logical, arn):
            events.put_rule(**rule.put_rule_args())
            events.put_targets(Rule=rule.name, Targets=[{"Id": "function", "Arn": rule.target_arn}])
        environment = lambda_environment(d.template, spec, self._endpoint_of(region))
        with self._lock:
            self._names[(region, name)] = spec.name
            if "Alias" in published:
                self.aliases[(region, spec.name)] = published["Alias"]
            self.async_retries[(region, spec.name)] = retries
            self.environments[(region, spec.name)] = environment
            if self._state_dir is None:
                return {"Ref": name, "Arn": arn, **published}
            old = self.workers.get((region, spec.name))
            self.workers[(region, spec.name)] = Worker(
                spec, region, environment, self._state_dir / f"{spec.name}-{region}.log", self._on_output
            )
        if old is not None:
            old.stop()  # a redeploy starts new execution environments with the new configuration
        return {"Ref": name, "Arn": arn, **published}

    @staticmethod
    def _sqs_mapping(d: Deployment, logical: str, function: str, ev: dict[str, Any]) -> None:
        """Create the mapping, or on a redeploy re-send every property, as CloudFormation does for a resource
        it updates (the twin updates every resource on every deploy: the strictest case for a live state)."""
        lam = d.client("lambda")
        props = {"FunctionName": function, "BatchSize": int(ev.get("BatchSize", 10)),
                 "Enabled": _bool(ev.get("Enabled", True))}  # fmt: skip
        if logical in d.template.physical:
            lam.update_event_source_mapping(UUID=d.template.physical[logical]["Ref"], **props)
            return
        responses = [str(t) for t in ev.get("FunctionResponseTypes", [])]
        mapping = lam.create_event_source_mapping(
            EventSourceArn=str(ev["Queue"]), FunctionResponseTypes=responses, **props
        )
        d.template.physical[logical] = {"Ref": mapping["UUID"]}

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


def _publish_alias(lam: Any, name: str, alias: str | None) -> dict[str, str]:
    """SAM's AutoPublishAlias: publish the configuration just deployed as a version and point the alias at it
    (created on the first deploy). Returns the ARNs ``Ref Fn.Alias`` / ``Ref Fn.Version`` resolve to."""
    if not alias:
        return {}
    version = lam.publish_version(FunctionName=name)
    try:
        reply = lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=version["Version"])
    except lam.exceptions.ResourceNotFoundException:
        reply = lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version["Version"])
    return {"Alias": str(reply["AliasArn"]), "Version": str(version["FunctionArn"])}


def _role(d: Deployment) -> str:
    """One execution role for every twin function (moto requires a role; IAM is not enforced in the twin)."""
    iam = d.client("iam")
    try:
        return str(iam.get_role(RoleName=FUNCTION_ROLE)["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                 "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
        return str(iam.create_role(RoleName=FUNCTION_ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


def _placeholder_zip() -> bytes:
    """A deployment package for moto's bookkeeping only: the twin's workers run the real code from src/."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("README.txt", "Tandem twin: the code runs in the twin's function workers, from src/.\n")
    return buf.getvalue()


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

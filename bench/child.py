"""The benchmarks' child interpreters: ``python -m bench.child KIND RESULT_JSON [ARGS...]``.

Why children: a cold start *is* a fresh interpreter; and the throughput loop must not share a GIL with the
moto server that stands in for AWS (S3 and DynamoDB do not run inside a Lambda's process). Results go to
a JSON file, never stdout: the handler's Powertools logs and EMF metrics own stdout. Times are
``time.monotonic_ns()``, which on Linux is one system-wide clock, so the parent can subtract its spawn
time from a child's stamps. Arguments are read from argv by hand: argparse would be billed to both kinds.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

STARTED_NS = time.monotonic_ns()  # this module's first line of work: interpreter + site + runpy are done

FUNCTION = "transaction_processor"


def _write(path: str, data: dict[str, Any]) -> None:
    import json

    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def boto3_client(result: str) -> int:
    """Baseline: what any Python Lambda that touches AWS pays - import boto3, create one client."""
    import boto3

    imported = time.monotonic_ns()
    boto3.client("s3")  # region and endpoint from the same environment the function gets
    done = time.monotonic_ns()
    _write(result, {"started_ns": STARTED_NS, "imported_ns": imported, "done_ns": done})
    return 0


class _Context:
    """What Lambda's context object offers the handler - defined here, so the cold start imports nothing of ours
    but the handler (the child may run on the bare artifact, without the repository's packages)."""

    def __init__(self, function_name: str, region: str) -> None:
        import uuid

        self.function_name, self.function_version, self.memory_limit_in_mb = function_name, "$LATEST", 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{function_name}"
        self.log_group_name, self.log_stream_name = f"/aws/lambda/{function_name}", f"bench/{self.aws_request_id}"
        self._deadline = time.monotonic() + 30.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def cold_start(result: str, event_path: str) -> int:
    """A Lambda cold start: import the handler module (init), then the first invocation with 10 messages.

    The event comes from a file the parent wrote, so the child does nothing a Lambda would not do.
    """
    import json

    with open(event_path, encoding="utf-8") as f:
        event = json.load(f)
    prepared = time.monotonic_ns()

    from transaction_processor.app import lambda_handler

    return _first_invocation(result, event, lambda_handler, prepared_ns=prepared, imported_ns=time.monotonic_ns())


def _first_invocation(result: str, event: dict[str, Any], handler: Any, **stamps: int) -> int:
    """Invoke ``handler`` once with ``event``; write the child's stamps, the end and the failed records."""
    region = os.environ.get("AWS_REGION", "us-east-1")
    response = handler(event, _Context(f"tandem-{FUNCTION}", region))
    done = time.monotonic_ns()
    failures = len(response.get("batchItemFailures", []))
    _write(
        result,
        {"started_ns": STARTED_NS, **stamps, "done_ns": done, "records": len(event["Records"]), "failures": failures},
    )
    return 0


def snapstart(result: str, event_path: str) -> int:
    """A SnapStart restore: init and the before-snapshot hooks once, then a restored copy - a fork, as the twin
    emulates it (:mod:`tandem.snapstart`) - runs the after-restore hooks and the first 10-message invocation.

    What a restore leaves to the invocation is ``restoring_ns`` (just before the fork) -> ``done_ns`` (in the
    copy). This process, the snapshot, ends as the copy does.
    """
    import json

    with open(event_path, encoding="utf-8") as f:
        event = json.load(f)
    from tandem import snapstart as emulated
    from transaction_processor.app import lambda_handler

    emulated.take_snapshot()
    restoring = time.monotonic_ns()
    emulated.restore(emulated.exit_like)
    return _first_invocation(result, event, lambda_handler, restoring_ns=restoring, restored_ns=time.monotonic_ns())


def _instrument(totals: dict[str, list[float]]) -> None:
    """Time the processor's stages (S3 journal, PG statement, DynamoDB status) without changing what they do."""
    from transaction_processor.app import build_processor

    processor = build_processor()

    def timed(owner: object, attr: str, name: str) -> None:
        inner = getattr(owner, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                totals.setdefault(name, []).append((time.perf_counter() - t) * 1000)

        object.__setattr__(owner, attr, wrapper)  # Processor is a frozen dataclass

    timed(processor.journal, "append", "s3_put_journal")
    timed(processor.ledger, "apply", "pg_apply_statement")
    timed(processor.status, "record", "dynamodb_status_transaction")
    timed(processor, "process", "processor_total")


def _count_calls(per_batch: list[dict[str, int]]) -> None:
    """Count every service call the handler makes - each AWS API call (botocore's ``before-call``, on the
    cached clients the processor was built with) and each PostgreSQL statement - into the batch's own tally
    (the last dict of ``per_batch``; the loop appends one per invoke)."""
    import pg8000.native

    from tandem_core import clients
    from tandem_core.settings import AwsSettings

    def tally(name: str) -> None:
        if per_batch:
            per_batch[-1][name] = per_batch[-1].get(name, 0) + 1

    aws = AwsSettings.from_env()
    for service in ("s3", "dynamodb", "secretsmanager"):
        client = clients.client_for(service, aws)
        client.meta.events.register("before-call", lambda model, s=service, **_: tally(f"{s}:{model.name}"))
    run = pg8000.native.Connection.run

    def counted(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        tally("postgresql:statement")
        return run(self, sql, *args, **kwargs)

    pg8000.native.Connection.run = counted


def throughput(result: str, seed: int, seconds: float, warmup: float, accounts: int, breakdown: bool) -> int:
    """Invoke the real handler back to back with fresh batches for ``seconds``; one process, one thread."""
    from bench.workload import Transfers
    from tandem.lambda_runtime import LambdaContext
    from transaction_processor.app import lambda_handler

    transfers = Transfers(seed, accounts=accounts, region=os.environ.get("AWS_REGION", "us-east-1"))

    def invoke() -> float:
        event = transfers.event()
        context = LambdaContext(function_name=f"tandem-{FUNCTION}", region=transfers.region)
        t = time.perf_counter()
        response = lambda_handler(event, context)
        elapsed = time.perf_counter() - t
        if response.get("batchItemFailures"):
            raise RuntimeError(f"handler rejected records of a valid batch: {response}")
        return elapsed * 1000

    first_ms = invoke()  # connects, checks the schema, builds the clients
    warm_batches = 1
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        invoke()
        warm_batches += 1

    stages: dict[str, list[float]] = {}
    if breakdown:
        _instrument(stages)
    calls: list[dict[str, int]] = []
    _count_calls(calls)
    latencies: list[float] = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        calls.append({})
        latencies.append(invoke())
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    _write(
        result,
        {
            "first_ms": first_ms,
            "warmup_batches": warm_batches,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
            "latencies_ms": latencies,
            "stages_ms": stages,
            "calls": calls,
        },
    )
    return 0


def main(argv: list[str]) -> int:
    kind, result, *rest = argv
    if kind == "boto3":
        return boto3_client(result)
    if kind == "cold":
        return cold_start(result, rest[0])
    if kind == "snapstart":
        return snapstart(result, rest[0])
    if kind == "throughput":
        seed, seconds, warmup, accounts, breakdown = rest
        return throughput(result, int(seed), float(seconds), float(warmup), int(accounts), breakdown == "1")
    raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

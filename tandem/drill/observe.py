"""What the two-region scenarios read from the twin, always through the APIs a client has: the failover
handler by Lambda Invoke, readiness and status items from DynamoDB, alarms and metrics from CloudWatch,
queue depths from SQS. Nothing here changes the twin; the scenarios (:mod:`tandem.drill.kinds`) do.

Two clocks meet here: the functions stamp their records with the machine's wall clock (epoch seconds), the
twin's CloudWatch stamps metrics with its emulated clock. :class:`Clocks` maps one onto the other, so every
report figure is emulated seconds from the scenario's zero (the outage start, or the switchover's).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tandem.drill.audit import Target
from tandem.local import emulator_client
from tandem.localpg import connect_uri
from tandem.twin.control import call

QUEUE_DEPTH = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
LAG_METRICS = {"aurora": "AuroraLagSeconds", "dynamodb": "DynamoDbLagSeconds", "s3": "S3LagSeconds"}


@dataclass(frozen=True)
class Clocks:
    """One (wall, emulated) pair read together, and the scale: enough to map any wall instant to twin time."""

    wall: float
    emulated: float
    scale: float

    def emulated_at(self, wall: float) -> float:
        return self.emulated + (wall - self.wall) * self.scale

    def since(self, zero_wall: float, wall: float | None) -> float | None:
        """Emulated seconds from ``zero_wall`` to ``wall`` (both wall-clock epochs), one decimal."""
        return None if wall is None else round((wall - zero_wall) * self.scale, 1)


class TwinView:
    """The twin as a client of both regions sees it (the ``tandem twin status --json`` document)."""

    def __init__(self, state_dir: Path, status: dict[str, Any]) -> None:
        self.state_dir, self.status = state_dir, status
        roles = {info["role"]: region for region, info in status["regions"].items()}
        self.primary, self.dr = roles["primary"], roles["dr"]
        self.scale = float(status["clock"]["scale"])

    def client(self, region: str, service: str) -> Any:
        return emulator_client(service, region, self.status["regions"][region]["endpoint"])

    def resource(self, region: str, name: str) -> str:
        return str(self.status["regions"][region]["resources"][name])

    def durable_ingress(self, region: str) -> bool:
        """Whether ``region``'s ingress records what it accepts in the global table (DurableIngress)."""
        return self.status["regions"][region]["resources"].get("durable_ingress") is True

    def target(self, region: str) -> Target:
        info = self.status["regions"][region]
        res = info["resources"]
        return Target(region, info["endpoint"], info["postgres"], res["queue_url"], res["dlq_url"],
                      res["ledger_table"], res["archive_bucket"])  # fmt: skip

    def ingress(self, region: str) -> str:
        return str(self.status["regions"][region]["ingress"])

    # ------------------------------------------------------------------------------------------ the handler
    def handler(self, region: str, request: dict[str, Any]) -> dict[str, Any]:
        """The region's failover handler, invoked as the operator CLI does (RequestResponse)."""
        name = f"{self.resource(region, 'stack')}-failover-handler"
        reply = self.client(region, "lambda").invoke(FunctionName=name, Payload=json.dumps(request).encode())
        answer: dict[str, Any] = json.loads(reply["Payload"].read())
        if reply.get("FunctionError"):
            raise RuntimeError(f"{name}: {answer.get('errorMessage')}")
        return answer

    def control(self) -> dict[str, Any]:
        return dict(self.handler(self.dr, {"action": "status"})["control"])

    def executions(self, action: str, since_wall: float) -> list[dict[str, Any]]:
        """The handler's records of ``action`` that started at or after ``since_wall``, oldest first."""
        return self.history(since_wall)[1].get(action, [])

    def history(self, since_wall: float) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """One status call (the handler is often cold by then: ~1.5 s each): the control record, and the
        records that started at or after ``since_wall`` by action, oldest first."""
        answer = self.handler(self.dr, {"action": "status"})
        found: dict[str, list[dict[str, Any]]] = {}
        for e in sorted(answer["executions"], key=lambda e: float(e["started_at"])):
            if e["started_at"] >= since_wall:
                found.setdefault(str(e["action"]), []).append(e)
        return dict(answer["control"]), found

    # ------------------------------------------------------------------------------------------ health
    def readiness(self, region: str) -> str | None:
        return self.readiness_record(region).get("verdict")

    def readiness_record(self, region: str) -> dict[str, Any]:
        """``region``'s readiness record as its monitor wrote it ({} before the first)."""
        from tandem_core.readiness import read_readiness

        table = self.resource(region, "ledger_table")
        return read_readiness(self.client(region, "dynamodb"), table, region) or {}

    def impaired_alarm(self) -> str:
        """The DR region's composite ``peer-region-impaired`` alarm state (what starts an automatic failover)."""
        name = f"{self.resource(self.dr, 'stack')}-peer-region-impaired"
        found = self.client(self.dr, "cloudwatch").describe_alarms(AlarmNames=[name], AlarmTypes=["CompositeAlarm"])
        return str(found["CompositeAlarms"][0]["StateValue"]) if found["CompositeAlarms"] else "missing"

    def automatic_failover_on(self) -> bool:
        rule = f"{self.resource(self.dr, 'stack')}-peer-region-impaired"
        return bool(self.client(self.dr, "events").describe_rule(Name=rule)["State"] == "ENABLED")

    def queues_empty(self) -> bool:
        """Nothing waiting or in flight in either region's queue, and nothing in flight in either DLQ (a
        reconciliation looking at a dead letter holds it invisible: the audit must see it)."""
        for region in (self.primary, self.dr):
            sqs = self.client(region, "sqs")
            attrs = sqs.get_queue_attributes(QueueUrl=self.resource(region, "queue_url"), AttributeNames=QUEUE_DEPTH)
            dead = sqs.get_queue_attributes(QueueUrl=self.resource(region, "dlq_url"), AttributeNames=QUEUE_DEPTH[1:])
            if any(int(attrs["Attributes"][n]) for n in QUEUE_DEPTH) or int(dead["Attributes"][QUEUE_DEPTH[1]]):
                return False
        return True

    def queues_settled(self, checks: int = 3, pause: float = 0.1) -> bool:
        """:meth:`queues_empty` on ``checks`` reads in a row: a message moving between queues (to a DLQ on its
        last receive, forwarded to the active region) is not taken for an empty system."""
        for i in range(checks):
            if i:
                time.sleep(pause)
            if not self.queues_empty():
                return False
        return True

    def clocks(self) -> Clocks:
        before = time.time()
        emulated = float(call(self.state_dir, "GET", "/status")["clock"]["now"])
        return Clocks((before + time.time()) / 2, emulated, self.scale)

    # ------------------------------------------------------------------------------------------ the data
    def committed_at(self, region: str, transaction_ids: Iterable[str]) -> dict[str, float]:
        """Transaction id -> when the ledger committed it (its row's ``committed_at``, the writer's clock).

        Read from ``region``'s database (the writer, or a hot standby of it). The ledger, not the status items:
        a status item is rewritten by whichever region last saw the message (a redelivery, a forwarded copy).
        """
        ids = sorted(set(transaction_ids))
        conn = connect_uri(self.status["regions"][region]["postgres"])
        try:
            rows = conn.run(
                "SELECT CAST(transaction_id AS text), extract(epoch FROM committed_at) FROM ledger_transaction"
                " WHERE CAST(transaction_id AS text) = ANY(:ids)",
                ids=ids,
            )
        finally:
            conn.close()
        return {str(tid): float(at) for tid, at in rows or []}

    def lag_series(self, clocks: Clocks, zero_wall: float, until_wall: float) -> dict[str, list[list[float]]]:
        """DR's measured replication lag per store (the monitor's metrics), as [emulated s from zero, seconds]."""
        start, end = clocks.emulated_at(zero_wall - 600 / self.scale), clocks.emulated_at(until_wall) + 60
        queries = [
            {"Id": f"m{i}", "ReturnData": True, "MetricStat": {"Stat": "Maximum", "Period": 60, "Metric": {
                "Namespace": "Tandem/Replication", "MetricName": name,
                "Dimensions": [{"Name": "Region", "Value": self.dr}]}}}
            for i, name in enumerate(LAG_METRICS.values())
        ]  # fmt: skip
        resp = self.client(self.dr, "cloudwatch").get_metric_data(
            MetricDataQueries=queries, StartTime=_instant(start), EndTime=_instant(end)
        )
        zero = clocks.emulated_at(zero_wall)
        series: dict[str, list[list[float]]] = {}
        for store, result in zip(LAG_METRICS, sorted(resp["MetricDataResults"], key=lambda r: r["Id"]), strict=True):
            points = sorted(zip(result["Timestamps"], result["Values"], strict=True), key=lambda p: p[0])
            series[store] = [[round(ts.timestamp() - zero, 1), float(v)] for ts, v in points if math.isfinite(v)]
        return series


def _instant(epoch: float) -> datetime:
    return datetime.fromtimestamp(math.floor(epoch), UTC)

"""Can this region accept work right now? The answer behind GET /health, which Route53's endpoint check reads.

"Accept work" means a producer's transaction would be queued and later recorded: the transaction queue
answers, and the ledger table is ACTIVE in this region. Each check runs against this region's endpoints
only, with the client layer's short timeouts, so a dead dependency turns into a 503 in seconds, not a hang.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError


@dataclass
class HealthReport:
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    def as_dict(self, region: str, role: str) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unavailable",
            "region": region,
            "role": role,
            "checks": self.checks,
        }


def _problem(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def region_health(sqs: Any, dynamodb: Any, queue_url: str, table: str) -> HealthReport:
    report = HealthReport()
    try:
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        report.checks["transaction_queue"] = "ok"
    except (ClientError, BotoCoreError) as exc:
        report.checks["transaction_queue"] = _problem(exc)
    try:
        status = dynamodb.describe_table(TableName=table)["Table"].get("TableStatus")
        report.checks["ledger_table"] = "ok" if status == "ACTIVE" else f"table {status}"
    except (ClientError, BotoCoreError) as exc:
        report.checks["ledger_table"] = _problem(exc)
    return report

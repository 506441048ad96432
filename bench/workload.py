"""Fresh valid transfers in the producer contract's shape, wrapped in the event Lambda's SQS poller delivers.

Stdlib only, and imported by the cold-start child before the handler: it must add next to nothing to what
that child measures. Seeded, so the parent can regenerate a child's transaction ids and check the ledger.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

BATCH_SIZE = 10  # the template's BatchSize: what one invocation receives at most
CURRENCIES = (("USD", 2), ("EUR", 2), ("JPY", 0))
ACCOUNT_ID = "123456789012"


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class Transfers:
    """An endless seeded stream of distinct valid transfers between accounts of a fixed pool."""

    def __init__(self, seed: int, accounts: int = 100, region: str = "us-east-1") -> None:
        self._rng = random.Random(seed)
        self._accounts = [f"acc-{i:05d}" for i in range(1, max(accounts, 2) + 1)]
        self.region = region
        self.queue_arn = f"arn:aws:sqs:{region}:{ACCOUNT_ID}:tandem-transactions"

    def transfer(self) -> dict[str, str]:
        """One transfer body (as a dict); ``created_at`` is now, RFC 3339 with ``Z``."""
        rng = self._rng
        code, digits = rng.choice(CURRENCIES)
        minor = rng.randint(1, 5_000_000)
        amount = str(minor) if digits == 0 else f"{minor // 10**digits}.{minor % 10**digits:0{digits}d}"
        account, counterparty = rng.sample(self._accounts, 2)
        return {
            "transaction_id": _uuid4(rng),
            "account_id": account,
            "counterparty_id": counterparty,
            "amount": amount,
            "currency": code,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }

    def batch(self, size: int = BATCH_SIZE) -> list[dict[str, str]]:
        return [self.transfer() for _ in range(size)]

    def event(self, size: int = BATCH_SIZE) -> dict[str, Any]:
        """An SQS event of ``size`` fresh transfers (no queue involved: ids and handles are synthetic)."""
        return self.sqs_event([json.dumps(t) for t in self.batch(size)])

    def sqs_event(self, bodies: list[str]) -> dict[str, Any]:
        """The shape of :func:`tandem.drill.sqs_event`, built here because the child must not import tandem.drill."""
        now_ms = str(int(datetime.now(UTC).timestamp() * 1000))
        return {
            "Records": [
                {
                    "messageId": _uuid4(self._rng),
                    "receiptHandle": "AQEB" + hashlib.sha256(body.encode()).hexdigest() * 2,
                    "body": body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": now_ms,
                        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                        "ApproximateFirstReceiveTimestamp": now_ms,
                    },
                    "messageAttributes": {},
                    "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": self.region,
                }
                for body in bodies
            ]
        }


def event_transaction_ids(event: dict[str, Any]) -> list[str]:
    return [str(json.loads(r["body"])["transaction_id"]) for r in event["Records"]]

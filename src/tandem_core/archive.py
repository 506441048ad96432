"""The journal of accepted input in S3: one JSON Lines object per batch, keyed by date and hour.

It is written *before* the ledger commit, so everything the ledger may hold is in the journal; after an
unplanned failover, lost-write reconciliation replays journal lines that the surviving ledger lacks.
The key is derived from the batch's message ids, so a retried identical batch overwrites its own object.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tandem_core.ledger import Entry

PREFIX = "archive/"


def journal_key(entries: Sequence[Entry], at: datetime) -> str:
    digest = hashlib.sha256("\n".join(sorted(e.message_id for e in entries)).encode()).hexdigest()[:32]
    return f"{PREFIX}{at:%Y/%m/%d/%H}/{digest}.jsonl"


def journal_lines(entries: Sequence[Entry], region: str) -> bytes:
    lines = [
        json.dumps(
            {
                "message_id": e.message_id,
                "region": region,
                "payload_hash": e.transaction.payload_hash,
                "transaction": e.transaction.as_message(),
            },
            sort_keys=True,
        )
        for e in entries
    ]
    return ("\n".join(lines) + "\n").encode()


class Journal:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def append(self, entries: Sequence[Entry], region: str, at: datetime) -> str | None:
        """Archive the batch (bucket default encryption applies: SSE-KMS with the region's key)."""
        if not entries:
            return None
        key = journal_key(entries, at)
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=journal_lines(entries, region),
            ContentType="application/x-ndjson",
        )
        return key

    def read(self, key: str) -> list[dict[str, Any]]:
        body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

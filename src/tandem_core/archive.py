"""The journal of accepted input in S3: one JSON Lines object per batch, keyed by date and hour.

It is written *before* the ledger commit, so everything the ledger may hold is in the journal; after an
unplanned failover, lost-write reconciliation replays journal lines that the surviving ledger lacks.
The key is derived from the batch's message ids, so a retried identical batch overwrites its own object.

A record the ledger refuses (see :mod:`tandem_core.ledger`) was journaled before the refusal was known, so
the processor rewrites the same object with that line marked ``"ledger_refused": "<reason>"``; reconciliation
reads :meth:`Journal.replayable`, which skips marked lines, and so never replays a message the ledger refused.
Why mark rather than drop the line: the journal stays the complete record of what the batch carried, and the
happy path keeps its single PUT (a second PUT only after a refusal). Should the process die between the
ledger's refusal and the rewrite, the batch fails and its retry refuses and marks the record again; a replay
of an unmarked refused line would only be refused once more.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tandem_core.models import Entry

PREFIX = "archive/"
REFUSED = "ledger_refused"  # a line's mark: the ledger refused it, with this reason


def journal_key(entries: Sequence[Entry], at: datetime, region: str) -> str:
    """Hour first (reconciliation lists a window by hour), then the writing region: both buckets replicate
    into each other, so the same batch journaled by each region (a replay after a failover) must not share
    a key - the second object would overwrite the first in both buckets."""
    digest = hashlib.sha256("\n".join(sorted(e.message_id for e in entries)).encode()).hexdigest()[:32]
    return f"{PREFIX}{at:%Y/%m/%d/%H}/{region}-{digest}.jsonl"


def journal_lines(entries: Sequence[Entry], region: str, refused: Mapping[str, str] | None = None) -> bytes:
    """One JSON line per entry; ``refused`` (message id -> reason) marks the lines the ledger refused."""
    lines = []
    for e in entries:
        line: dict[str, Any] = {
            "message_id": e.message_id,
            "region": region,
            "payload_hash": e.transaction.payload_hash,
            "transaction": e.transaction.as_message(),
        }
        if refused and e.message_id in refused:
            line[REFUSED] = refused[e.message_id]
        lines.append(json.dumps(line, sort_keys=True))
    return ("\n".join(lines) + "\n").encode()


class Journal:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def append(self, entries: Sequence[Entry], region: str, at: datetime) -> str | None:
        """Archive the batch (bucket default encryption applies: SSE-KMS with the region's key)."""
        if not entries:
            return None
        key = journal_key(entries, at, region)
        self._put(key, journal_lines(entries, region))
        return key

    def mark_refused(self, key: str, entries: Sequence[Entry], region: str, refused: Mapping[str, str]) -> None:
        """Rewrite the batch's object (same key, same lines) with the lines the ledger refused marked."""
        self._put(key, journal_lines(entries, region, refused))

    def read(self, key: str) -> list[dict[str, Any]]:
        """Every line of the object, refused ones included (they carry ``ledger_refused``)."""
        body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def replayable(self, key: str) -> list[dict[str, Any]]:
        """The lines lost-write reconciliation may replay: all but those the ledger refused."""
        return [line for line in self.read(key) if REFUSED not in line]

    def _put(self, key: str, body: bytes) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType="application/x-ndjson")

"""Which outage each region of the twin has: the whole region, or one part of it (a grey failure).

``tandem twin outage REGION`` takes the whole region down (``region``); ``--only PART`` takes down one part
while the rest of the region keeps working, as AWS's partial failures do:

- ``database``: the region's Aurora cluster (its PostgreSQL server) dies; its APIs, ingress and functions
  keep answering, DynamoDB and S3 keep replicating; Aurora's replication to the other region stops with it.
- ``ingress``: the region's HTTP API (``POST /transactions``, ``GET /health``) stops answering.
- ``functions``: Lambda in the region fails every invocation (``ServiceUnavailable``), its SQS pollers
  included; the ingress, which invokes ``GET /health``'s function, answers 5xx.

A region has at most one outage at a time; ``tandem twin restore`` ends whichever it is.
"""

from __future__ import annotations

import threading
from typing import Final

REGION: Final = "region"
#: What ``--only`` may name.
PARTS: Final = ("database", "ingress", "functions")
#: What ``twin status`` shows per region (or None).
KINDS: Final = (REGION, *PARTS)


def outage_kind(only: str | None) -> str:
    """The outage ``--only`` names: None is the whole region."""
    if only is None:
        return REGION
    if only not in PARTS:
        raise ValueError(f"an outage's --only must be one of {', '.join(PARTS)} (or absent: the whole region), "
                         f"not {only!r}")  # fmt: skip
    return only


def ingress_answers(outage: str | None, *, partitioned: bool) -> bool:
    """Whether Route53's checkers (outside both regions) get a healthy ``GET /health`` from a region's ingress.

    Not in a region or ingress outage (nothing listens), not in a functions outage (the route's function
    fails: 5xx), not partitioned (cut off from the internet, so from the checkers too). A database outage
    leaves it healthy: ``/health`` does not read the database.
    """
    return outage not in (REGION, "ingress", "functions") and not partitioned


class Outages:
    """The outage in place per region (thread-safe: the control API serves requests concurrently)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}

    def of(self, region: str) -> str | None:
        return self._kinds.get(region)

    def begin(self, region: str, kind: str) -> None:
        """Record ``kind`` in ``region``; refused while the region has an outage already."""
        if kind not in KINDS:
            raise ValueError(f"an outage is one of {', '.join(KINDS)}, not {kind!r}")
        with self._lock:
            current = self._kinds.get(region)
            if current == REGION:
                raise ValueError(f"{region} is already down")
            if current is not None:
                raise ValueError(f"{region} already has an outage ({current} only); restore it first")
            self._kinds[region] = kind

    def end(self, region: str) -> None:
        with self._lock:
            self._kinds.pop(region, None)

    def require(self, region: str) -> str:
        """The outage ``region`` has; refused when it has none (nothing to restore)."""
        kind = self._kinds.get(region)
        if kind is None:
            raise ValueError(f"{region} is not down; nothing to restore")
        return kind

"""A vantage point outside this region: Route53's health checkers' latest view of the peer's ingress.

Everything the alarm judges is measured from here - our probe of the peer, our replica of its heartbeat - so
this region's own fault (its egress cut, replication into it stalled) looks exactly like the peer's loss. Before
an automatic failover against a peer that does not answer us, the handler asks Route53's checkers, which probe
the peer's ``/health`` from several AWS regions of their own: if they see it healthy, the fault is on our side
and failing over would split the traffic (their view also steers DNS) and lose what the peer still commits.

The rule is Route53's own: an endpoint is healthy when more than 18% of its checkers last saw it healthy.
Observations older than ``max_age_seconds`` do not count; with none left - or the Route53 API unreachable,
as it is from everywhere while us-east-1, where its control plane lives, is the region lost - the witness
has no view and the handler goes by this region's signals alone, as it would without a witness.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

#: Route53 counts an endpoint healthy when more than this share of its checkers report it healthy
HEALTHY_SHARE = 0.18


@dataclass(frozen=True)
class Sighting:
    """What the checkers last saw: ``healthy`` True/False, or None (no view: see ``detail``)."""

    healthy: bool | None
    checkers_healthy: int = 0
    checkers_failing: int = 0
    detail: str = ""


class Route53Witness:
    """The peer's endpoint health check (``PeerEndpointHealthCheckId``) as Route53's checkers last saw it."""

    def __init__(
        self, route53: Any, health_check_id: str, *, max_age_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._route53 = route53
        self._check = health_check_id
        self._max_age = max_age_seconds
        self._clock = clock

    def sighting(self) -> Sighting:
        try:
            observations = self._route53.get_health_check_status(HealthCheckId=self._check)["HealthCheckObservations"]
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
            return Sighting(None, detail=f"Route53 did not answer: {code}")
        now = self._clock()
        healthy = failing = 0
        for observation in observations:
            report = observation.get("StatusReport", {})
            checked = report.get("CheckedTime")
            if not isinstance(checked, datetime) or now - checked.timestamp() > self._max_age:
                continue
            if str(report.get("Status", "")).startswith("Success"):
                healthy += 1
            else:
                failing += 1
        if not healthy + failing:
            return Sighting(None, detail=f"no observation of check {self._check} in the last {self._max_age:g} s")
        seen = healthy / (healthy + failing) > HEALTHY_SHARE
        return Sighting(seen, healthy, failing, f"{healthy} of {healthy + failing} checkers see the peer healthy")

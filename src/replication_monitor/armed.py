"""Is automatic failover armed from this region? The monitor's part of `tandem doctor`, every run.

The monitor publishes the answer as ``FailoverArmed`` (1/0) and an alarm pages when it is 0 (or missing) for
three runs, so a redeploy that drops ``PEER_HEALTH_URL``, a disabled failover rule or a database the monitor
can no longer observe pages before a region loss finds them. Only what this region can see: the operator's
`tandem doctor` checks both regions, the alarms, the permissions and the DNS.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tandem_core.aurora_observer import AuroraObservation


def failover_armed(
    peer_health_url: str | None, aurora: AuroraObservation, events: Any | None, rule: str | None
) -> tuple[bool, list[str]]:
    """(armed, why not). ``events``/``rule``: this region's EventBridge and the failover rule's name (the
    template sets both; without them the rule is not judged here)."""
    reasons = []
    if not peer_health_url:
        reasons.append("PEER_HEALTH_URL is empty: the peer's liveness is unknown, so the alarm cannot fire")
    if not aurora.reachable:
        reasons.append(f"the ledger database is not observable: {aurora.error or 'unreachable'}")
    if events is not None and rule:
        try:
            state = str(events.describe_rule(Name=rule).get("State"))
        except (ClientError, BotoCoreError) as exc:
            reasons.append(f"the failover rule {rule} is unreadable: {exc}")
        else:
            if state != "ENABLED":
                reasons.append(f"the failover rule {rule} is {state}")
    return not reasons, reasons

"""The steps of a failover, each idempotent: running one again after it succeeded changes nothing.

- ``promote_database``: this region's Aurora cluster becomes the global writer - ``SwitchoverGlobalCluster``
  (planned: Aurora waits until it has everything) or ``FailoverGlobalCluster`` with ``AllowDataLoss``
  (unplanned), called in this region; then wait until ``DescribeGlobalClusters`` shows it as the writer.
- ``fence_peer_processing``: disable the peer's SQS event source mapping (and record it, see
  :class:`tandem_core.fencing.ProcessingSwitch`). Best effort with short timeouts
  (DESIGN §4 rule 1): an unreachable peer is fenced later by its own monitor, and by the epoch meanwhile.
- ``shift_dns``: publish ``Tandem/Failover PrimaryActive`` (``Gate=primary``) in the DR-role region, where
  infra_global's gate alarm reads it - 0 when DR becomes active, 1 when the primary does. A data-plane
  signal: Route53's metric health check follows the alarm without its control plane (rule 6).
- ``notify``: one SNS message on this region's alarm topic.
- ``enable_processing``: enable this region's mapping - only after ``promote_database``: a read-only ledger
  would only burn the messages' receive counts.
- ``apply_accepted`` (unplanned only, after ``promote_database``): with the durable ingress, what the old
  region accepted in the last hour and nothing has applied goes to this region's queue
  (:class:`tandem_core.intake.AcceptedReplay`), so it is applied now rather than when that region returns.
  Best effort: what it misses still comes back by forwarding and reconciliation once the old region answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tandem_core.fencing import ProcessingSwitch
from tandem_core.intake import AcceptedReplay
from tandem_core.settings import FailoverSettings

NAMESPACE = "Tandem/Failover"
GATE = [{"Name": "Gate", "Value": "primary"}]
BEST_EFFORT = frozenset({"fence_peer_processing", "apply_accepted"})
DEPENDS_ON: Mapping[str, tuple[str, ...]] = {
    "enable_processing": ("promote_database",), "apply_accepted": ("promote_database",),
}  # fmt: skip


class StepFailed(RuntimeError):
    """A step could not do its job; the message says what happened, in one line."""


@dataclass(frozen=True)
class RegionApis:
    """One region's clients the runbook needs (the peer's built with short timeouts, one attempt)."""

    region: str
    rds: Any
    lambda_: Any
    cloudwatch: Any
    sns: Any
    ssm: Any


@dataclass(frozen=True)
class Order:
    """What the steps act for: the region to activate, how, and the summary ``notify`` sends."""

    execution_id: str
    action: str
    mode: str  # "switchover" | "failover"
    target_region: str
    summary: Mapping[str, Any]


class Runbook:
    def __init__(
        self,
        settings: FailoverSettings,
        own: RegionApis,
        peer: RegionApis,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        accepted: AcceptedReplay | None = None,
    ) -> None:
        """``accepted``: the durable ingress's record of what the peer accepted (None: the ingress is direct)."""
        self._s = settings
        self._own = own
        self._peer = peer
        self._accepted = accepted
        self._sleep = sleep
        self._monotonic = monotonic

    def run(self, step: str, order: Order) -> str:
        """Run ``step`` for ``order``; returns what it did (one line), raises StepFailed (or an AWS error)."""
        match step:
            case "promote_database":
                return self.promote_database(order.mode)
            case "fence_peer_processing":
                s = self._s
                return self.set_processing(
                    self._peer, s.peer_processor_function, s.peer_processing_state_parameter, enabled=False
                )
            case "shift_dns":
                return self.shift_dns(order.target_region)
            case "notify":
                return self.notify(order)
            case "enable_processing":
                s = self._s
                return self.set_processing(self._own, s.processor_function, s.processing_state_parameter, enabled=True)
            case "apply_accepted":
                return self.apply_accepted(order)
        raise StepFailed(f"unknown step {step!r}")

    # ------------------------------------------------------------------------------------------ accepted
    def apply_accepted(self, order: Order) -> str:
        """What the old region accepted and nothing applied, sent to this region's queue (unplanned only)."""
        old = self._peer.region
        if order.mode != "failover":
            return f"a switchover strands nothing: {old} forwards its queue"
        if self._accepted is None:
            return f"durable ingress off: what {old} holds in its queue waits for it"
        done = self._accepted.run(old, datetime.now(UTC), self._monotonic() + 60.0, self._monotonic)
        return (f"{done.recorded} accepted by {old} in the last {self._accepted.window_seconds:g} s: "
                f"{len(done.sent)} sent to this region's queue, {done.applied_before} applied before")  # fmt: skip

    # ------------------------------------------------------------------------------------------ database
    def writer_state(self) -> tuple[bool, str, str]:
        """(this region's cluster is the writer, its ARN, the global cluster's status)."""
        rds = self._own.rds
        arn = str(rds.describe_db_clusters(DBClusterIdentifier=self._s.ledger_db_cluster_id)["DBClusters"][0][
            "DBClusterArn"])  # fmt: skip
        found = rds.describe_global_clusters(GlobalClusterIdentifier=self._s.global_cluster_id)["GlobalClusters"]
        if not found:
            raise StepFailed(f"global cluster {self._s.global_cluster_id} not found")
        members = found[0].get("GlobalClusterMembers", [])
        ours = next((m for m in members if m.get("DBClusterArn") == arn), None)
        if ours is None:
            raise StepFailed(f"{self._s.ledger_db_cluster_id} is not a member of {self._s.global_cluster_id}")
        return bool(ours.get("IsWriter")), arn, str(found[0].get("Status", ""))

    def promote_database(self, mode: str) -> str:
        writer, arn, status = self.writer_state()
        if writer:
            return f"{self._s.ledger_db_cluster_id} is the global writer already"
        # a promotion we asked for may be under way; a switchover stuck on a dead primary is not what a forced
        # failover waits for: it asks for the failover (AllowDataLoss) that can finish without the primary
        if not (status == "failing-over" or (status == "switching-over" and mode == "switchover")):
            rds, gid = self._own.rds, self._s.global_cluster_id
            if mode == "switchover":
                rds.switchover_global_cluster(GlobalClusterIdentifier=gid, TargetDbClusterIdentifier=arn)
            else:
                rds.failover_global_cluster(
                    GlobalClusterIdentifier=gid, TargetDbClusterIdentifier=arn, AllowDataLoss=True
                )
        deadline = self._monotonic() + self._s.promotion_timeout_seconds
        while self._monotonic() < deadline:
            if self.writer_state()[0]:
                return f"{self._s.ledger_db_cluster_id} promoted by {mode}"
            self._sleep(1.0)
        raise StepFailed(
            f"{self._s.ledger_db_cluster_id} not the writer {self._s.promotion_timeout_seconds:g} s after the {mode}"
        )

    # ------------------------------------------------------------------------------------------ processing
    def set_processing(self, apis: RegionApis, function: str, parameter: str, *, enabled: bool) -> str:
        """The processor's mapping in ``apis``' region on (or off), and the recorded state the next deploy reads."""
        switch = ProcessingSwitch(apis.region, apis.lambda_, apis.ssm, function, parameter)
        try:
            return switch.set(enabled=enabled)
        except LookupError as exc:
            raise StepFailed(str(exc)) from None

    # ------------------------------------------------------------------------------------------ DNS, notice
    def shift_dns(self, target_region: str) -> str:
        """The gate lives in the DR-role region: 0 = primary not active (DR answers), 1 = primary active."""
        primary_active = 1.0 if (target_region == self._own.region) == (self._s.region_role == "primary") else 0.0
        gate_region = self._own if self._s.region_role == "dr" else self._peer
        gate_region.cloudwatch.put_metric_data(
            Namespace=NAMESPACE,
            MetricData=[{"MetricName": "PrimaryActive", "Dimensions": GATE, "Value": primary_active, "Unit": "None"}],
        )
        return f"PrimaryActive={primary_active:g} published in {gate_region.region}"

    def notify(self, order: Order) -> str:
        self.page(f"Tandem {order.action} to {order.target_region} ({order.mode})",
                  {"execution_id": order.execution_id, **order.summary})  # fmt: skip
        return f"notified {self._s.alarm_topic_arn.rsplit(':', 1)[-1]}"

    def page(self, subject: str, message: Mapping[str, Any]) -> None:
        """One message on this region's alarm topic (what an on-call subscription receives)."""
        self._own.sns.publish(
            TopicArn=self._s.alarm_topic_arn, Subject=subject[:100], Message=json.dumps(message, default=str)
        )


AWS_ERRORS = (ClientError, BotoCoreError, StepFailed)

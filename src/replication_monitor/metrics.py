"""The monitor's metrics as CloudWatch EMF lines (Powertools), namespace ``Tandem/Replication``.

Dimension ``Region`` (the measuring region) and nothing else - no ``service`` dimension - so the alarms and
the dashboard name each metric exactly. Peer liveness (and the peer's own word on its ledger) is published
once per probe round at high resolution (1 s storage) with the round's own timestamp, so an alarm can judge
consecutive 10-second periods; lags, readiness and whether automatic failover is armed (``FailoverArmed``)
once per run, at standard resolution. An unknown lag is not published at all (never a fake 0).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_lambda_powertools.metrics import MetricResolution, MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from tandem_core.replication import Store

NAMESPACE = "Tandem/Replication"
LAG_METRICS = {Store.AURORA: "AuroraLagSeconds", Store.DYNAMODB: "DynamoDbLagSeconds", Store.S3: "S3LagSeconds"}


class EmfSink:
    """Prints one EMF object per probe round and one per run (Lambda ships stdout to CloudWatch Logs)."""

    def __init__(self, region: str) -> None:
        self._region = region

    def _provider(self) -> AmazonCloudWatchEMFProvider:
        provider = AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service="")  # "": no service dimension
        provider.add_dimension(name="Region", value=self._region)
        return provider

    def probe_round(
        self,
        at: float,
        peer_healthy: bool | None,
        peer_heartbeat_age: float | None,
        peer_ledger_failing_seconds: float | None = None,
    ) -> None:
        provider = self._provider()
        if peer_healthy is not None:
            provider.add_metric("PeerHealthy", MetricUnit.Count, 1 if peer_healthy else 0, MetricResolution.High)
        if peer_ledger_failing_seconds is not None:  # the peer's own word on its ledger, in a heartbeat not stale
            provider.add_metric(
                "PeerLedgerFailingSeconds", MetricUnit.Seconds, round(peer_ledger_failing_seconds, 3),
                MetricResolution.High,
            )  # fmt: skip
        if peer_heartbeat_age is not None:
            provider.add_metric(
                "PeerHeartbeatAgeSeconds", MetricUnit.Seconds, round(peer_heartbeat_age, 3), MetricResolution.High
            )
        self._flush(provider, at)

    def run(self, at: float, lags: Mapping[Store, float | None], ready: bool, armed: bool) -> None:
        provider = self._provider()
        for store, name in LAG_METRICS.items():
            lag = lags.get(store)
            if lag is not None:
                provider.add_metric(name, MetricUnit.Seconds, round(lag, 3))
        provider.add_metric("Ready", MetricUnit.Count, 1 if ready else 0)
        provider.add_metric("FailoverArmed", MetricUnit.Count, 1 if armed else 0)
        self._flush(provider, at)

    @staticmethod
    def _flush(provider: AmazonCloudWatchEMFProvider, at: float) -> None:
        if provider.metric_set:
            provider.set_timestamp(int(at * 1000))
            provider.flush_metrics()

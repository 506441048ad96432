"""The handler's metrics as CloudWatch EMF lines (Powertools), namespace ``Tandem/Failover``, dimension Region.

``FailoverExecutions`` (1 per execution an invocation ended, with ``Outcome`` completed/failed in a second
dimension set), ``FailoverSeconds`` (from taking the lock to the end) and ``EstimatedRpoSeconds`` (what an
unplanned failover may have lost; 0 for a switchover; not published when unknown).
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

NAMESPACE = "Tandem/Failover"


class EmfExecutionMetrics:
    def __init__(self, region: str) -> None:
        self._region = region

    def execution(self, outcome: str, seconds: float, rpo_estimate_seconds: float | None) -> None:
        provider = AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service="")  # "": no service dimension
        provider.add_dimension(name="Region", value=self._region)
        provider.add_metric("FailoverExecutions", MetricUnit.Count, 1)
        provider.add_metric("FailoverSeconds", MetricUnit.Seconds, round(seconds, 3))
        if rpo_estimate_seconds is not None:
            provider.add_metric("EstimatedRpoSeconds", MetricUnit.Seconds, round(rpo_estimate_seconds, 3))
        provider.flush_metrics()
        outcome_provider = AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service="")
        outcome_provider.add_dimension(name="Region", value=self._region)
        outcome_provider.add_dimension(name="Outcome", value=outcome)
        outcome_provider.add_metric("FailoverExecutions", MetricUnit.Count, 1)
        outcome_provider.flush_metrics()

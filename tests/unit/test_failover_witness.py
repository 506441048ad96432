"""The witness: Route53's checkers' latest view of the peer's ingress, read through Route53's API (moto with
the twin's health-checker extension, in-process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from failover_handler.witness import Route53Witness
from tandem.twin.clock import TwinClock
from tandem.twin.extensions import route53_health
from tandem.twin.extensions.route53_health import HealthChecker


@pytest.fixture
def r53(aws_env: None) -> Iterator[Any]:
    route53_health.install()
    with mock_aws():
        yield boto3.client("route53", region_name="us-east-1")
    route53_health.set_checker(None)


def endpoint_check(r53: Any) -> str:
    config = {"Type": "HTTPS", "FullyQualifiedDomainName": "p1.example.com", "Port": 443, "ResourcePath": "/health",
              "RequestInterval": 10, "FailureThreshold": 3}  # fmt: skip
    created = r53.create_health_check(CallerReference=str(uuid.uuid4()), HealthCheckConfig=config)
    return str(created["HealthCheck"]["Id"])


def test_the_witness_reports_the_checkers_latest_observations_not_the_thresholded_status(r53: Any) -> None:
    """The checkers' raw observations turn at their next probe; the check's status waits for its threshold.
    The alarm needs ~40 s: by then every checker has observed the peer down at least once."""
    clock = TwinClock()
    up = [True]
    checker = HealthChecker(clock, endpoint_probe=lambda _config: up[0])
    check = endpoint_check(r53)
    witness = Route53Witness(r53, check, clock=clock.now)
    checker.tick(clock.now())
    sighting = witness.sighting()
    assert (sighting.healthy, sighting.checkers_failing) == (True, 0)
    assert sighting.checkers_healthy >= 3
    up[0] = False
    checker.tick(clock.now() + 10)
    sighting = witness.sighting()
    assert (sighting.healthy, sighting.checkers_healthy) == (False, 0)
    assert checker.status(check) is True  # one failure of three: Route53's own verdict has not turned yet


def test_old_observations_and_an_unknown_check_give_no_view(r53: Any) -> None:
    clock = TwinClock()
    checker = HealthChecker(clock)
    check = endpoint_check(r53)
    checker.tick(clock.now())
    later = Route53Witness(r53, check, max_age_seconds=60, clock=lambda: clock.now() + 600)
    assert later.sighting().healthy is None
    assert "no observation" in later.sighting().detail
    unknown = Route53Witness(r53, "0f0e0d0c-0000-4000-8000-00000000000a", clock=clock.now).sighting()
    assert unknown.healthy is None
    assert unknown.detail.startswith("Route53 did not answer")

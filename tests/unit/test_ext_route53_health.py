"""Route53 health-check status from alarms, children and endpoints; failover answers from those statuses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.twin.clock import TwinClock
from tandem.twin.extensions import route53_health
from tandem.twin.extensions.route53_health import HealthChecker

T0 = 1_800_000_000.0


@pytest.fixture
def r53(aws_env: None) -> Iterator[Any]:
    route53_health.install()
    with mock_aws():
        yield boto3.client("route53", region_name="us-east-1")
    route53_health.set_checker(None)  # checkers register themselves for TestDNSAnswer: none outlives its test


def cloudwatch(region: str = "us-west-2") -> Any:
    return boto3.client("cloudwatch", region_name=region)


def make_alarm(name: str = "dr-active", region: str = "us-west-2") -> None:
    cloudwatch(region).put_metric_alarm(
        AlarmName=name,
        Namespace="Tandem",
        MetricName="DrActive",
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
    )


def set_alarm(state: str, name: str = "dr-active", region: str = "us-west-2") -> None:
    cloudwatch(region).set_alarm_state(AlarmName=name, StateValue=state, StateReason="test")


def create(r53: Any, **config: Any) -> str:
    check_id: str = r53.create_health_check(CallerReference=str(uuid.uuid4()), HealthCheckConfig=config)["HealthCheck"][
        "Id"
    ]
    return check_id


def metric_check(r53: Any, **extra: Any) -> str:
    return create(
        r53,
        Type="CLOUDWATCH_METRIC",
        AlarmIdentifier={"Region": "us-west-2", "Name": "dr-active"},
        InsufficientDataHealthStatus=extra.pop("insufficient", "LastKnownStatus"),
        **extra,
    )


def status_report(r53: Any, check_id: str) -> str:
    observations = r53.get_health_check_status(HealthCheckId=check_id)["HealthCheckObservations"]
    assert observations
    assert len({o["StatusReport"]["Status"] for o in observations}) == 1
    report: str = observations[0]["StatusReport"]["Status"]
    return report


def test_the_metric_check_keeps_its_alarm_settings_and_reports_the_alarm(r53: Any) -> None:
    make_alarm()
    check_id = metric_check(r53, insufficient="Unhealthy")
    check = r53.get_health_check(HealthCheckId=check_id)["HealthCheck"]
    assert check["HealthCheckConfig"]["AlarmIdentifier"] == {"Region": "us-west-2", "Name": "dr-active"}
    assert check["HealthCheckConfig"]["InsufficientDataHealthStatus"] == "Unhealthy"
    assert check["CloudWatchAlarmConfiguration"]["MetricName"] == "DrActive"
    assert check["CloudWatchAlarmConfiguration"]["Namespace"] == "Tandem"


def test_a_metric_check_follows_its_alarm_at_once_by_default(r53: Any) -> None:
    make_alarm()
    checker = HealthChecker(TwinClock())
    check_id = metric_check(r53)
    set_alarm("OK")
    checker.tick(T0)
    assert checker.status(check_id) is True
    set_alarm("ALARM")
    checker.tick(T0 + 1)
    assert checker.status(check_id) is False
    assert status_report(r53, check_id) == "Failure: CloudWatch alarm dr-active is in state ALARM"
    observation = r53.get_health_check_status(HealthCheckId=check_id)["HealthCheckObservations"][0]
    assert observation["StatusReport"]["CheckedTime"].timestamp() == pytest.approx(T0 + 1)


def test_a_metric_check_with_a_failure_threshold_needs_consecutive_observations(r53: Any) -> None:
    make_alarm()
    checker = HealthChecker(TwinClock())
    check_id = metric_check(r53, FailureThreshold=2, RequestInterval=10)
    set_alarm("OK")
    checker.tick(T0)
    assert checker.status(check_id) is True

    set_alarm("ALARM")
    checker.tick(T0 + 5)  # within the request interval: no observation
    checker.tick(T0 + 10)  # 1st failing observation
    assert checker.status(check_id) is True
    checker.tick(T0 + 20)  # 2nd: FailureThreshold reached
    assert checker.status(check_id) is False

    set_alarm("OK")
    checker.tick(T0 + 30)
    assert checker.status(check_id) is False
    set_alarm("ALARM")  # a relapse resets the healthy streak
    checker.tick(T0 + 40)
    set_alarm("OK")
    checker.tick(T0 + 50)
    assert checker.status(check_id) is False
    checker.tick(T0 + 60)
    assert checker.status(check_id) is True


@pytest.mark.parametrize(
    ("setting", "last_alarm_state", "expected"),
    [
        ("Healthy", "ALARM", True),
        ("Unhealthy", "OK", False),
        ("LastKnownStatus", "ALARM", False),
        ("LastKnownStatus", "OK", True),
    ],
)
def test_insufficient_data_follows_the_setting(r53: Any, setting: str, last_alarm_state: str, expected: bool) -> None:
    make_alarm()
    checker = HealthChecker(TwinClock())
    check_id = metric_check(r53, insufficient=setting)
    set_alarm(last_alarm_state)
    checker.tick(T0)
    set_alarm("INSUFFICIENT_DATA")
    checker.tick(T0 + 1)
    assert checker.status(check_id) is expected
    assert "insufficient data" in status_report(r53, check_id)


def test_last_known_status_without_history_is_healthy(r53: Any) -> None:
    make_alarm()
    set_alarm("INSUFFICIENT_DATA")  # plain moto starts alarms in OK
    checker = HealthChecker(TwinClock())
    check_id = metric_check(r53)
    checker.tick(T0)
    assert checker.status(check_id) is True


def test_calculated_check_counts_healthy_children_and_can_be_inverted(r53: Any) -> None:
    up = {"a.example.com": True, "b.example.com": True}
    checker = HealthChecker(TwinClock(), endpoint_probe=lambda config: up[config["FullyQualifiedDomainName"]])
    a = create(r53, Type="HTTPS", FullyQualifiedDomainName="a.example.com", Port=443, FailureThreshold=1)
    b = create(r53, Type="HTTPS", FullyQualifiedDomainName="b.example.com", Port=443, FailureThreshold=1)
    both = create(r53, Type="CALCULATED", ChildHealthChecks=[a, b], HealthThreshold=2)
    inverted = create(r53, Type="CALCULATED", ChildHealthChecks=[a, b], HealthThreshold=2, Inverted=True)

    checker.tick(T0)
    assert (checker.status(both), checker.status(inverted)) == (True, False)
    assert status_report(r53, both) == "Success: 2 of 2 child health checks are healthy (HealthThreshold 2)"

    up["b.example.com"] = False
    checker.tick(T0 + 30)
    assert (checker.status(b), checker.status(both), checker.status(inverted)) == (False, False, True)

    r53.update_health_check(HealthCheckId=both, HealthThreshold=1)  # children are kept by the update
    checker.tick(T0 + 31)
    assert checker.status(both) is True
    config = r53.get_health_check(HealthCheckId=both)["HealthCheck"]
    assert config["HealthCheckConfig"]["ChildHealthChecks"] == [a, b]
    assert config["HealthCheckVersion"] == 2


def test_endpoint_check_uses_the_probe_interval_and_threshold(r53: Any) -> None:
    seen: list[dict[str, Any]] = []
    up = [True]

    def probe(config: dict[str, Any]) -> bool:
        seen.append(config)
        return up[0]

    checker = HealthChecker(TwinClock(), endpoint_probe=probe)
    check_id = create(
        r53,
        Type="HTTPS_STR_MATCH",
        FullyQualifiedDomainName="ingress.us-east-1.example.com",
        ResourcePath="/health",
        SearchString="ok",
        Port=443,
        RequestInterval=10,
        FailureThreshold=3,
    )
    checker.tick(T0)
    assert seen[0]["FullyQualifiedDomainName"] == "ingress.us-east-1.example.com"
    assert seen[0]["ResourcePath"] == "/health"
    up[0] = False
    for k in range(1, 3):
        checker.tick(T0 + 10 * k)
        assert checker.status(check_id) is True
    checker.tick(T0 + 25)  # within the interval
    assert len(seen) == 3
    checker.tick(T0 + 30)  # 3rd consecutive failure
    assert checker.status(check_id) is False
    assert status_report(r53, check_id).startswith("Failure: Connection to ingress.us-east-1.example.com refused")


def test_disabled_is_healthy_and_inverted_flips_it(r53: Any) -> None:
    checker = HealthChecker(TwinClock(), endpoint_probe=lambda config: False)
    plain = create(r53, Type="TCP", IPAddress="10.0.0.1", Port=5432, Disabled=True, FailureThreshold=1)
    inverted = create(r53, Type="TCP", IPAddress="10.0.0.2", Port=5432, Disabled=True, Inverted=True)
    checker.tick(T0)
    assert (checker.status(plain), checker.status(inverted)) == (True, False)


def test_failover_record_flips_to_secondary_when_the_primary_check_fails(r53: Any) -> None:
    make_alarm("primary-down", region="us-west-2")
    checker = HealthChecker(TwinClock())
    primary_check = create(
        r53,
        Type="CLOUDWATCH_METRIC",
        AlarmIdentifier={"Region": "us-west-2", "Name": "primary-down"},
        InsufficientDataHealthStatus="Healthy",
    )
    zone = r53.create_hosted_zone(Name="example.com", CallerReference="z")["HostedZone"]["Id"]

    def record(role: str, value: str, check: str | None) -> dict[str, Any]:
        rrset: dict[str, Any] = {
            "Name": "api.example.com.",
            "Type": "CNAME",
            "SetIdentifier": role.lower(),
            "Failover": role,
            "TTL": 60,
            "ResourceRecords": [{"Value": value}],
        }
        if check:
            rrset["HealthCheckId"] = check
        return {"Action": "CREATE", "ResourceRecordSet": rrset}

    r53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                record("PRIMARY", "ingress.us-east-1.example.com", primary_check),
                record("SECONDARY", "ingress.us-west-2.example.com", None),
            ]
        },
    )
    checker.tick(T0)
    answer = checker.resolve_failover(zone, "API.example.com", "CNAME")
    assert answer is not None
    assert answer.failover == "PRIMARY"

    set_alarm("ALARM", name="primary-down")
    checker.tick(T0 + 1)
    answer = checker.resolve_failover(zone, "api.example.com.", "CNAME")
    assert answer is not None
    assert answer.failover == "SECONDARY"
    assert answer.resource_records == [{"Value": "ingress.us-west-2.example.com"}]
    assert checker.resolve_failover(zone, "other.example.com", "CNAME") is None


def test_both_unhealthy_answers_the_primary(r53: Any) -> None:
    checker = HealthChecker(TwinClock(), endpoint_probe=lambda config: False)
    checks = [create(r53, Type="TCP", IPAddress=f"10.0.0.{i}", Port=443, FailureThreshold=1) for i in (1, 2)]
    zone = r53.create_hosted_zone(Name="example.com", CallerReference="z")["HostedZone"]["Id"]
    r53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": "db.example.com",
                        "Type": "A",
                        "SetIdentifier": role,
                        "Failover": role,
                        "TTL": 60,
                        "HealthCheckId": check,
                        "ResourceRecords": [{"Value": ip}],
                    },
                }
                for role, check, ip in (("PRIMARY", checks[0], "10.0.0.1"), ("SECONDARY", checks[1], "10.0.0.2"))
            ]
        },
    )
    checker.tick(T0)
    answer = checker.resolve_failover(zone, "db.example.com", "A")
    assert answer is not None
    assert answer.failover == "PRIMARY"


# ---------------------------------------------------------------------------------------------- TestDNSAnswer


def zone_with(r53: Any, *rrsets: dict[str, Any]) -> str:
    zone: str = r53.create_hosted_zone(Name="example.com", CallerReference=str(uuid.uuid4()))["HostedZone"]["Id"]
    changes = [{"Action": "CREATE", "ResourceRecordSet": rrset} for rrset in rrsets]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    return zone


def failover_cname(role: str, value: str, check: str | None, name: str = "api.example.com.") -> dict[str, Any]:
    rrset: dict[str, Any] = {
        "Name": name,
        "Type": "CNAME",
        "SetIdentifier": role.lower(),
        "Failover": role,
        "TTL": 60,
        "ResourceRecords": [{"Value": value}],
    }
    if check:
        rrset["HealthCheckId"] = check
    return rrset


def dns_answer(r53: Any, zone: str, name: str, type_: str = "CNAME") -> tuple[str, list[str]]:
    answer = r53.test_dns_answer(HostedZoneId=zone, RecordName=name, RecordType=type_)
    return answer["ResponseCode"], answer["RecordData"]


def test_dns_answer_follows_the_primary_check_of_a_failover_pair(r53: Any) -> None:
    up = [True]
    checker = HealthChecker(TwinClock(), endpoint_probe=lambda config: up[0])
    primary_check = create(r53, Type="HTTPS", FullyQualifiedDomainName="ingress.us-east-1.example.com", Port=443)
    zone = zone_with(
        r53,
        failover_cname("PRIMARY", "ingress.us-east-1.example.com", primary_check),
        failover_cname("SECONDARY", "ingress.us-west-2.example.com", None),
    )
    checker.tick(T0)
    answer = r53.test_dns_answer(
        HostedZoneId=zone, RecordName="API.Example.com.", RecordType="CNAME", ResolverIP="192.0.2.1"
    )
    name_servers = r53.get_hosted_zone(Id=zone)["DelegationSet"]["NameServers"]
    assert answer["RecordData"] == ["ingress.us-east-1.example.com"]
    assert (answer["ResponseCode"], answer["Protocol"]) == ("NOERROR", "UDP")
    assert (answer["RecordName"], answer["RecordType"]) == ("API.Example.com.", "CNAME")
    assert answer["Nameserver"] == name_servers[0]

    up[0] = False
    for k in range(1, 3):  # FailureThreshold 3 (the default): still the primary after two failures
        checker.tick(T0 + 30 * k)
        assert dns_answer(r53, zone, "api.example.com") == ("NOERROR", ["ingress.us-east-1.example.com"])
    checker.tick(T0 + 90)
    assert dns_answer(r53, zone, "api.example.com") == ("NOERROR", ["ingress.us-west-2.example.com"])

    up[0] = True
    for k in range(4, 7):
        checker.tick(T0 + 30 * k)
    assert dns_answer(r53, zone, "api.example.com") == ("NOERROR", ["ingress.us-east-1.example.com"])


def test_dns_answer_gives_a_plain_records_values_and_no_data_for_another_type(r53: Any) -> None:
    HealthChecker(TwinClock())
    plain = {
        "Name": "db.example.com",
        "Type": "A",
        "TTL": 60,
        "ResourceRecords": [{"Value": "10.0.0.1"}, {"Value": "10.0.0.2"}],
    }
    zone = zone_with(r53, plain)
    assert dns_answer(r53, zone, "db.example.com.", "A") == ("NOERROR", ["10.0.0.1", "10.0.0.2"])
    assert dns_answer(r53, zone, "db.example.com", "AAAA") == ("NOERROR", [])


def test_dns_answer_follows_an_alias_to_its_target(r53: Any) -> None:
    checker = HealthChecker(TwinClock(), endpoint_probe=lambda config: False)
    primary_check = create(r53, Type="TCP", IPAddress="10.0.0.1", Port=443, FailureThreshold=1)
    zone = zone_with(
        r53,
        failover_cname("PRIMARY", "ingress.us-east-1.example.com", primary_check),
        failover_cname("SECONDARY", "ingress.us-west-2.example.com", None),
    )
    zone_id = zone.removeprefix("/hostedzone/")
    alias = {"HostedZoneId": zone_id, "DNSName": "api.example.com.", "EvaluateTargetHealth": True}
    elb = {
        "HostedZoneId": "Z35SXDOTRQ7X7K",
        "DNSName": "lb-1.us-east-1.elb.amazonaws.com.",
        "EvaluateTargetHealth": False,
    }
    r53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {"Name": "www.example.com", "Type": "CNAME", "AliasTarget": alias},
                },
                {"Action": "CREATE", "ResourceRecordSet": {"Name": "lb.example.com", "Type": "A", "AliasTarget": elb}},
            ]
        },
    )
    checker.tick(T0)
    assert dns_answer(r53, zone, "www.example.com") == ("NOERROR", ["ingress.us-west-2.example.com"])
    assert dns_answer(r53, zone, "lb.example.com", "A") == ("NOERROR", ["lb-1.us-east-1.elb.amazonaws.com."])


def test_dns_answer_for_a_name_not_in_the_zone_is_nxdomain(r53: Any) -> None:
    HealthChecker(TwinClock())
    zone = zone_with(r53, failover_cname("PRIMARY", "ingress.us-east-1.example.com", None))
    assert dns_answer(r53, zone, "missing.example.com") == ("NXDOMAIN", [])


def test_dns_answer_for_an_unknown_zone_is_no_such_hosted_zone(r53: Any) -> None:
    HealthChecker(TwinClock())
    with pytest.raises(ClientError) as error:
        r53.test_dns_answer(HostedZoneId="Z0000000000000000000", RecordName="api.example.com", RecordType="CNAME")
    assert error.value.response["Error"]["Code"] == "NoSuchHostedZone"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_dns_answer_reads_the_newest_checker_and_needs_one(r53: Any) -> None:
    zone = zone_with(
        r53, {"Name": "db.example.com", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "10.0.0.1"}]}
    )
    route53_health.set_checker(None)
    with pytest.raises(RuntimeError, match="no HealthChecker is installed"):
        r53.test_dns_answer(HostedZoneId=zone, RecordName="db.example.com", RecordType="A")
    HealthChecker(TwinClock())
    assert dns_answer(r53, zone, "db.example.com", "A") == ("NOERROR", ["10.0.0.1"])

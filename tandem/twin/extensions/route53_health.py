"""Route53 health-check status computed from what each check watches (moto 5.2.5 hard-codes "Success").

DNS failover in the twin answers from these statuses, so they must follow the alarm, the children or the
endpoint a check watches:

- :class:`HealthChecker` ``tick(now)`` observes every health check of every account and computes its status;
  the status is kept on moto's ``HealthCheck`` object and ``GetHealthCheckStatus`` returns it (AWS shape:
  one ``HealthCheckObservation`` per checker region, ``StatusReport`` "Success: ..."/"Failure: ...",
  ``CheckedTime`` in emulated time). ``status(id)`` answers for the twin; ``resolve_failover`` is Route53's
  data plane for a PRIMARY/SECONDARY failover record pair.
- ``TestDNSAnswer`` (moto 5.2.5 has no such API) answers from that data plane, i.e. what a resolver would get
  now: a failover pair's record as ``resolve_failover`` picks it, a plain record's values, an alias's target
  (the target record's values when it is in the same zone, else its DNS name); NXDOMAIN with no data for a
  name the zone does not have, NOERROR with no data for a name without that type; an unknown zone is
  ``NoSuchHostedZone`` (404). It reads the statuses of the installed checker: the newest
  :class:`HealthChecker` installs itself (:func:`set_checker` replaces it).
- API fixes installed by :func:`install`: ``CreateHealthCheck``/``UpdateHealthCheck``/``GetHealthCheck`` keep
  ``AlarmIdentifier`` and ``InsufficientDataHealthStatus`` (moto drops them) and return
  ``CloudWatchAlarmConfiguration``; ``UpdateHealthCheck`` no longer wipes ``ChildHealthChecks`` and
  ``Regions`` when the request leaves them out, and bumps ``HealthCheckVersion``.

Status rules (AWS's, on the twin clock):

- CLOUDWATCH_METRIC reads the alarm named by ``AlarmIdentifier`` in that region's CloudWatch backend: OK is
  healthy, ALARM unhealthy, INSUFFICIENT_DATA (or a missing alarm) per ``InsufficientDataHealthStatus``
  (Healthy, Unhealthy, or LastKnownStatus: the last status from a decided alarm, healthy if there is none).
  AWS follows the alarm directly, so a metric check observes on every tick and changes on the first
  observation; when ``FailureThreshold`` is given explicitly it observes every ``RequestInterval`` and needs
  that many consecutive observations, like an endpoint check.
- HTTP, HTTPS, HTTP_STR_MATCH, HTTPS_STR_MATCH and TCP ask ``endpoint_probe(config) -> bool`` (``config`` is
  the check's ``HealthCheckConfig`` as the API returns it) once per ``RequestInterval`` emulated seconds and
  change status after ``FailureThreshold`` consecutive observations the other way. One checker stands in for
  AWS's fleet (no 18%-of-checkers rule).
- CALCULATED is healthy when at least ``HealthThreshold`` children are healthy, from their current status.
- A disabled check is healthy; ``Inverted`` then flips every type (AWS: invert to stop traffic).
- A new check, or one never observed yet, is healthy (AWS's default before there is data).
- Other types (RECOVERY_CONTROL) stay healthy: moto has no ARC data plane.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from moto.cloudwatch.models import cloudwatch_backends
from moto.core.base_backend import BackendDict, BaseBackend
from moto.core.responses import ActionResult
from moto.route53 import urls as route53_urls
from moto.route53.models import FakeZone, HealthCheck, RecordSet, route53_backends
from moto.route53.responses import Route53

from tandem import moto_ext
from tandem.twin.clock import TwinClock

log = logging.getLogger(__name__)

EndpointProbe = Callable[[dict[str, Any]], bool]

ENDPOINT_TYPES = ("HTTP", "HTTPS", "HTTP_STR_MATCH", "HTTPS_STR_MATCH", "TCP")
# AWS's default health-checker regions, used when a check does not name its own.
CHECKER_REGIONS = (
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
)
CHECKER_IP = "127.0.13.37"

# Attributes this module keeps on moto's HealthCheck objects.
_STATE_ATTR = "tandem_health"
_ALARM_ATTR = "alarm_identifier"
_INSUFFICIENT_ATTR = "insufficient_data_health_status"
_EXPLICIT_THRESHOLD_ATTR = "tandem_failure_threshold_explicit"

# TestDNSAnswer's URL, in moto's urls.py form (moto 5.2.5 routes no such path).
_TEST_DNS_ANSWER_PATH = r"{0}/(?P<api_version>[\d_-]+)/testdnsanswer$"
# An alias to an alias... is followed this many times at most, so a cycle of aliases still answers.
_MAX_ALIAS_DEPTH = 8
# The Nameserver reported for a zone without a delegation set to name one from (a private zone).
_DEFAULT_NAMESERVER = "ns-0.awsdns-00.com"

# The checker whose statuses TestDNSAnswer reads. Module-level because moto's response classes (and so the
# handler) are global to the process; the twin daemon makes exactly one HealthChecker, which installs itself.
_checker: HealthChecker | None = None


def set_checker(checker: HealthChecker | None) -> None:
    """Make ``checker`` the one TestDNSAnswer answers from (``None`` removes it)."""
    global _checker
    _checker = checker


@dataclass
class HealthState:
    """What the checker knows about one health check (kept on moto's HealthCheck)."""

    healthy: bool = True  # the status DNS uses, after FailureThreshold, Disabled and Inverted
    observed_healthy: bool = True  # debounced result of the observations, before Disabled/Inverted
    streak: int = 0  # consecutive observations disagreeing with observed_healthy
    last_observed: float | None = None
    last_known_metric: bool | None = None  # for InsufficientDataHealthStatus=LastKnownStatus
    report: str = "Success: no observation yet"
    checked_at: float | None = None


def health_state(check: HealthCheck) -> HealthState:
    state: HealthState = check.__dict__.setdefault(_STATE_ATTR, HealthState())
    return state


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _regional_backends[B: BaseBackend](backends: BackendDict[B]) -> list[tuple[str, str, B]]:
    """A snapshot of (account, partition, backend): server threads may add backends while a tick iterates."""
    return [
        (account, region, backend)
        for account, per_region in list(backends.items())
        for region, backend in list(per_region.items())
    ]


# ---------------------------------------------------------------------------------------------- moto patches


def _extra_args(params: dict[str, Any]) -> dict[str, Any]:
    return {
        _ALARM_ATTR: params.get("AlarmIdentifier"),
        _INSUFFICIENT_ATTR: params.get("InsufficientDataHealthStatus"),
    }


def _response_create_health_check(self: Route53) -> ActionResult:
    """moto's CreateHealthCheck plus the CLOUDWATCH_METRIC settings it drops."""
    config = self._get_param("HealthCheckConfig")
    args = {
        "ip_address": config.get("IPAddress"),
        "port": config.get("Port"),
        "type": config["Type"],
        "resource_path": config.get("ResourcePath"),
        "fqdn": config.get("FullyQualifiedDomainName"),
        "search_string": config.get("SearchString"),
        "request_interval": config.get("RequestInterval"),
        "failure_threshold": config.get("FailureThreshold"),
        "health_threshold": config.get("HealthThreshold"),
        "measure_latency": config.get("MeasureLatency"),
        "inverted": config.get("Inverted"),
        "disabled": config.get("Disabled"),
        "enable_sni": config.get("EnableSNI"),
        "children": config.get("ChildHealthChecks", []),
        "regions": config.get("Regions", []),
    }
    check = self.backend.create_health_check(self._get_param("CallerReference"), args)
    for attr, value in _extra_args(config).items():
        setattr(check, attr, value)
    setattr(check, _EXPLICIT_THRESHOLD_ATTR, config.get("FailureThreshold") is not None)
    return ActionResult({"HealthCheck": check})


def _response_update_health_check(self: Route53) -> ActionResult:
    """moto's UpdateHealthCheck, without wiping omitted lists, keeping alarm settings, bumping the version."""
    check_id = self._get_param("HealthCheckId")
    args = {
        "ip_address": self._get_param("IPAddress"),
        "port": self._get_param("Port"),
        "resource_path": self._get_param("ResourcePath"),
        "fqdn": self._get_param("FullyQualifiedDomainName"),
        "search_string": self._get_param("SearchString"),
        "failure_threshold": self._get_param("FailureThreshold"),
        "health_threshold": self._get_param("HealthThreshold"),
        "inverted": self._get_param("Inverted"),
        "disabled": self._get_param("Disabled"),
        "enable_sni": self._get_param("EnableSNI"),
        "children": self._get_param("ChildHealthChecks"),
        "regions": self._get_param("Regions"),
    }
    check = self.backend.update_health_check(check_id, args)
    extra = _extra_args({k: self._get_param(k) for k in ("AlarmIdentifier", "InsufficientDataHealthStatus")})
    for attr, value in extra.items():
        if value is not None:
            setattr(check, attr, value)
    if args["failure_threshold"] is not None:
        setattr(check, _EXPLICIT_THRESHOLD_ATTR, True)
    check.health_check_version += 1
    return ActionResult({"HealthCheck": check})


def _response_get_health_check_status(self: Route53) -> ActionResult:
    """The status :class:`HealthChecker` computed, as one observation per checker region."""
    check = self.backend.get_health_check(self._get_param("HealthCheckId"))
    state = health_state(check)
    checked = _dt(state.checked_at) if state.checked_at is not None else datetime.now(UTC).replace(tzinfo=None)
    regions = check.regions or list(CHECKER_REGIONS)
    observations = [
        {"Region": region, "IPAddress": CHECKER_IP, "StatusReport": {"Status": state.report, "CheckedTime": checked}}
        for region in regions
    ]
    return ActionResult({"HealthCheckObservations": observations})


def _response_test_dns_answer(self: Route53) -> ActionResult:
    """What Route53's name servers answer now, from the installed checker's statuses (AWS response shape)."""
    zone = self.backend.get_hosted_zone(self._get_param("HostedZoneId"))  # NoSuchHostedZone (404), as AWS
    name, type_ = self._get_param("RecordName"), self._get_param("RecordType")
    checker = _checker
    if checker is None:
        raise RuntimeError("no HealthChecker is installed: TestDNSAnswer cannot read health-check statuses")
    code, data = checker.answer(zone.id, name, type_)
    servers = zone.delegation_set.name_servers if zone.delegation_set is not None else []
    return ActionResult(
        {
            "Nameserver": servers[0] if servers else _DEFAULT_NAMESERVER,
            "RecordName": name,
            "RecordType": type_,
            "RecordData": data,
            "ResponseCode": code,
            "Protocol": "UDP",
        }
    )


def _patch_health_check_config() -> None:
    """GetHealthCheck returns AlarmIdentifier/InsufficientDataHealthStatus and the alarm's configuration."""
    prop: property = HealthCheck.__dict__["health_check_config"]
    original = prop.fget
    assert original is not None

    def health_check_config(self: HealthCheck) -> dict[str, Any]:
        config: dict[str, Any] = original(self)
        if getattr(self, _ALARM_ATTR, None):
            config["AlarmIdentifier"] = getattr(self, _ALARM_ATTR)
        if getattr(self, _INSUFFICIENT_ATTR, None):
            config["InsufficientDataHealthStatus"] = getattr(self, _INSUFFICIENT_ATTR)
        return config

    def cloud_watch_alarm_configuration(self: HealthCheck) -> dict[str, Any] | None:
        identifier = getattr(self, _ALARM_ATTR, None)
        if self.type_ != "CLOUDWATCH_METRIC" or not identifier:
            return None
        alarm = _find_alarm(self, identifier)
        if alarm is None or alarm.rule is not None:
            return None
        return {
            "EvaluationPeriods": alarm.evaluation_periods,
            "Threshold": alarm.threshold,
            "ComparisonOperator": alarm.comparison_operator,
            "Period": alarm.period,
            "MetricName": alarm.metric_name,
            "Namespace": alarm.namespace,
            "Statistic": alarm.statistic or alarm.extended_statistic,
            "Dimensions": [{"Name": d.name, "Value": d.value} for d in alarm.dimensions],
        }

    setattr(HealthCheck, "health_check_config", property(health_check_config))  # noqa: B010
    setattr(HealthCheck, "cloud_watch_alarm_configuration", property(cloud_watch_alarm_configuration))  # noqa: B010


def _find_alarm(check: HealthCheck, identifier: dict[str, str]) -> Any:
    """The CloudWatch alarm a metric check watches, in the health check's account (None when absent)."""
    account = getattr(check, "tandem_account", None)
    accounts = [account] if account else list(cloudwatch_backends.keys())
    for acct in accounts:
        try:
            backend = cloudwatch_backends[acct][identifier.get("Region", "us-east-1")]
        except KeyError:  # a region moto does not know
            return None
        alarm = backend.alarms.get(identifier.get("Name", ""))
        if alarm is not None:
            return alarm
    return None


@functools.cache
def install() -> None:
    """Install the Route53 health-check fixes into moto (idempotent). See the module docstring."""
    moto_ext.apply()
    _patch_health_check_config()
    setattr(Route53, "create_health_check", _response_create_health_check)  # noqa: B010
    setattr(Route53, "update_health_check", _response_update_health_check)  # noqa: B010
    setattr(Route53, "get_health_check_status", _response_get_health_check_status)  # noqa: B010
    # moto routes by its urls.py table, read when a mock starts or the server builds the Route53 app.
    route53_urls.url_paths[_TEST_DNS_ANSWER_PATH] = Route53.dispatch
    setattr(Route53, "test_dns_answer", _response_test_dns_answer)  # noqa: B010


# ---------------------------------------------------------------------------------------------- the checker


def _always_up(config: dict[str, Any]) -> bool:  # noqa: ARG001 - the probe signature
    return True


def _normalise(name: str) -> str:
    return name.rstrip(".").lower()


def _zone(hosted_zone_id: str) -> FakeZone | None:
    """The hosted zone of that id in any account (zone ids are unique), None when there is none."""
    zone_id = hosted_zone_id.replace("/hostedzone/", "")
    for _account, _partition, backend in _regional_backends(route53_backends):
        if zone_id in backend.zones:
            return backend.zones[zone_id]
    return None


class HealthChecker:
    """Computes every health check's status on the twin clock (see the module docstring).

    ``endpoint_probe(config) -> bool`` answers endpoint checks (the twin maps an ingress FQDN to "is that
    region up"); without one every endpoint is up. The newest checker is the one TestDNSAnswer reads.
    """

    def __init__(self, clock: TwinClock, endpoint_probe: EndpointProbe | None = None) -> None:
        install()
        self.clock = clock
        self.endpoint_probe = endpoint_probe or _always_up
        set_checker(self)

    def tick_now(self) -> None:
        self.tick(self.clock.now())

    def tick(self, now: float) -> None:
        for account, _partition, backend in _regional_backends(route53_backends):
            checks = dict(backend.health_checks)
            for check in checks.values():
                check.tandem_account = account  # type: ignore[attr-defined]
                if check.type_ != "CALCULATED":
                    self._observe(check, now)
            done: dict[str, bool] = {}
            for check_id, check in checks.items():
                if check.type_ == "CALCULATED":
                    self._calculate(check_id, checks, done, set(), now)

    def status(self, health_check_id: str) -> bool:
        """True when healthy; an unknown id is healthy (a record pointing at nothing still answers)."""
        for _account, _partition, backend in _regional_backends(route53_backends):
            check = backend.health_checks.get(health_check_id)
            if check is not None:
                return health_state(check).healthy
        return True

    def resolve_failover(self, hosted_zone_id: str, name: str, type_: str) -> RecordSet | None:
        """The record Route53 answers with for ``name``/``type_`` (its DNS data plane).

        Failover pair: PRIMARY when it is healthy (or has no health check), else a healthy SECONDARY, else
        PRIMARY (AWS answers the primary when both are unhealthy). A name without failover records returns
        its first record; None when nothing matches. Alias targets' health (EvaluateTargetHealth) is not
        evaluated.
        """
        records = self._records(hosted_zone_id, name, type_)
        failover = {r.failover: r for r in records if r.failover in ("PRIMARY", "SECONDARY")}
        if not failover:
            return records[0] if records else None
        primary, secondary = failover.get("PRIMARY"), failover.get("SECONDARY")
        if primary is not None and self._record_healthy(primary):
            return primary
        if secondary is not None and self._record_healthy(secondary):
            return secondary
        return primary or secondary

    def answer(self, hosted_zone_id: str, name: str, type_: str) -> tuple[str, list[str]]:
        """(DNS response code, record data) for ``name``/``type_``: TestDNSAnswer's view of the data plane.

        NXDOMAIN when the zone has no record of that name, NOERROR with no data when it has the name but not
        the type; otherwise the values of the record :meth:`resolve_failover` picks. An alias answers its
        target's values when the target is a record of the same zone, else the target's DNS name.
        """
        return self._answer(hosted_zone_id, name, type_, _MAX_ALIAS_DEPTH)

    def _answer(self, hosted_zone_id: str, name: str, type_: str, depth: int) -> tuple[str, list[str]]:
        zone = _zone(hosted_zone_id)
        wanted = _normalise(name)
        if zone is None or not any(_normalise(r.name) == wanted for r in list(zone.rrsets)):
            return "NXDOMAIN", []
        record = self.resolve_failover(hosted_zone_id, name, type_)
        if record is None:
            return "NOERROR", []
        target = record.alias_target
        if not target:
            return "NOERROR", [str(value) for value in record.records]
        dns_name = str(target.get("DNSName", ""))
        same_zone = str(target.get("HostedZoneId", "")).replace("/hostedzone/", "") == zone.resource_id
        if same_zone and depth > 0 and self._records(hosted_zone_id, dns_name, type_):
            return self._answer(hosted_zone_id, dns_name, type_, depth - 1)
        return "NOERROR", [dns_name]

    def _records(self, hosted_zone_id: str, name: str, type_: str) -> list[RecordSet]:
        wanted = _normalise(name)
        zone = _zone(hosted_zone_id)
        if zone is None:
            return []
        return [r for r in list(zone.rrsets) if _normalise(r.name) == wanted and r.type == type_]

    def _record_healthy(self, record: RecordSet) -> bool:
        return record.health_check_id is None or self.status(record.health_check_id)

    # -------------------------------------------------------------------------------------- observation

    def _observe(self, check: HealthCheck, now: float) -> None:
        state = health_state(check)
        explicit = bool(getattr(check, _EXPLICIT_THRESHOLD_ATTR, False))
        follows_alarm = check.type_ == "CLOUDWATCH_METRIC" and not explicit
        interval = 0.0 if follows_alarm else float(check.request_interval or 30)
        if state.last_observed is not None and now - state.last_observed < interval:
            return
        state.last_observed = now
        if check.disabled:
            ok, report = True, "Success: health check is disabled"
        elif check.type_ == "CLOUDWATCH_METRIC":
            ok, report = self._metric_observation(check, state)
        elif check.type_ in ENDPOINT_TYPES:
            ok, report = self._endpoint_observation(check)
        else:
            ok, report = True, f"Success: {check.type_} health checks are not evaluated by the twin"
        threshold = 1 if follows_alarm or check.disabled else max(1, int(check.failure_threshold or 3))
        if ok == state.observed_healthy:
            state.streak = 0
        else:
            state.streak += 1
            if state.streak >= threshold:
                state.observed_healthy, state.streak = ok, 0
        state.report, state.checked_at = report, now
        self._settle(check, state)

    def _metric_observation(self, check: HealthCheck, state: HealthState) -> tuple[bool, str]:
        identifier = getattr(check, _ALARM_ATTR, None) or {}
        alarm = _find_alarm(check, identifier) if identifier else None
        alarm_state = alarm.state_value if alarm is not None else "INSUFFICIENT_DATA"
        name = identifier.get("Name", "?")
        if alarm_state in ("OK", "ALARM"):
            ok = alarm_state == "OK"
            state.last_known_metric = ok
            verdict = "Success" if ok else "Failure"
            return ok, f"{verdict}: CloudWatch alarm {name} is in state {alarm_state}"
        setting = getattr(check, _INSUFFICIENT_ATTR, None) or "LastKnownStatus"
        if setting == "Healthy":
            ok = True
        elif setting == "Unhealthy":
            ok = False
        else:
            ok = True if state.last_known_metric is None else state.last_known_metric
        verdict = "Success" if ok else "Failure"
        return ok, f"{verdict}: CloudWatch alarm {name} has insufficient data (InsufficientDataHealthStatus {setting})"

    def _endpoint_observation(self, check: HealthCheck) -> tuple[bool, str]:
        try:
            ok = bool(self.endpoint_probe(check.health_check_config))
        except Exception:
            log.exception("endpoint probe failed for health check %s", check.id)
            ok = False
        target = check.fqdn or check.ip_address or "?"
        if check.type_ == "TCP":
            return ok, "Success: TCP connection established." if ok else f"Failure: Connection to {target} refused."
        if ok:
            return True, "Success: HTTP Status Code 200, OK"
        return False, (
            f"Failure: Connection to {target} refused. The endpoint or the internet connection is down, "
            "or requests are being blocked by your firewall."
        )

    def _calculate(
        self, check_id: str, checks: dict[str, HealthCheck], done: dict[str, bool], path: set[str], now: float
    ) -> bool:
        """A calculated check's status from its children's (children first; a cycle counts as healthy)."""
        if check_id in done:
            return done[check_id]
        check = checks.get(check_id)
        if check is None:
            return True
        if check.type_ != "CALCULATED" or check_id in path:
            return health_state(check).healthy
        children = list(check.children or [])
        healthy = sum(1 for c in children if self._calculate(c, checks, done, path | {check_id}, now))
        threshold = int(check.health_threshold or 0)
        state = health_state(check)
        ok = True if check.disabled else healthy >= threshold
        state.observed_healthy, state.last_observed, state.checked_at = ok, now, now
        state.report = (
            f"{'Success' if ok else 'Failure'}: {healthy} of {len(children)} child health checks are healthy "
            f"(HealthThreshold {threshold})"
        )
        self._settle(check, state)
        done[check_id] = state.healthy
        return state.healthy

    @staticmethod
    def _settle(check: HealthCheck, state: HealthState) -> None:
        state.healthy = state.observed_healthy != bool(check.inverted)


__all__ = [
    "CHECKER_REGIONS",
    "ENDPOINT_TYPES",
    "EndpointProbe",
    "HealthChecker",
    "HealthState",
    "health_state",
    "install",
    "set_checker",
]

"""Settings read once from the environment (the template's Environment block, or the twin's).

One model per concern; each function's handler builds the one it needs and caches it, so a bad
configuration fails at the first invocation with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tandem_core.validation import describe


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete or wrong; nothing can be processed until it is fixed."""


class _EnvModel(BaseModel):
    # defer_build: a function builds only the settings models it reads (not the other functions' ones)
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", defer_build=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        source = os.environ if env is None else env
        try:
            return cls.model_validate(dict(source))
        except ValidationError as exc:
            reason = describe(exc, "settings")
            raise ConfigurationError(f"{cls.__name__}: bad or missing environment variables: {reason}") from None


class AwsSettings(_EnvModel):
    """Where the AWS APIs are: the real ones, or an emulator through the standard AWS_ENDPOINT_URL."""

    region: str = Field(alias="AWS_REGION", min_length=1)
    endpoint_url: str | None = Field(default=None, alias="AWS_ENDPOINT_URL")


class LedgerDbSettings(_EnvModel):
    """How to reach the ledger database (Aurora PostgreSQL writer, or the local server)."""

    host: str = Field(alias="LEDGER_DB_HOST", min_length=1)
    #: the cluster's reader endpoint, which answers in a global secondary too (the Aurora observer reads there)
    reader_host: str | None = Field(default=None, alias="LEDGER_DB_READER_HOST")
    port: int = Field(default=5432, alias="LEDGER_DB_PORT", gt=0, lt=65536)
    name: str = Field(default="ledger", alias="LEDGER_DB_NAME", min_length=1)
    auth: Literal["secret", "iam"] = Field(default="secret", alias="LEDGER_DB_AUTH")
    secret_arn: str | None = Field(default=None, alias="LEDGER_DB_SECRET_ARN")
    user: str | None = Field(default=None, alias="LEDGER_DB_USER")
    sslmode: Literal["disable", "require", "verify-full"] = Field(default="require", alias="LEDGER_DB_SSLMODE")
    #: the CA file verify-full checks the server against; None: AWS's RDS roots shipped with the code
    sslrootcert: str | None = Field(default=None, alias="LEDGER_DB_SSLROOTCERT")
    #: the region the function runs in: verify-full loads only that region's RDS roots
    region: str | None = Field(default=None, alias="AWS_REGION")
    timeout: float = Field(default=10.0, alias="LEDGER_DB_TIMEOUT", gt=0)

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.auth == "secret" and not self.secret_arn:
            raise ValueError("LEDGER_DB_SECRET_ARN is required when LEDGER_DB_AUTH=secret")
        if self.auth == "iam" and not self.user:
            raise ValueError("LEDGER_DB_USER is required when LEDGER_DB_AUTH=iam")
        return self


_REGION = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$"
_PARAMETER = r"^/[A-Za-z0-9_.\-/]+$"


class ProcessorSettings(_EnvModel):
    """Everything the transaction processor needs besides the database.

    Without ``PEER_REGION`` the processor runs unfenced (a single region: ``make invoke``, the one-region
    integration tests); the template always sets it, so a deployed processor always checks the epoch.
    """

    ledger_table: str = Field(alias="LEDGER_TABLE_NAME", min_length=3)
    archive_bucket: str = Field(alias="ARCHIVE_BUCKET_NAME", min_length=3)
    region_role: Literal["primary", "dr"] = Field(default="primary", alias="TANDEM_REGION_ROLE")
    peer_region: str | None = Field(default=None, alias="PEER_REGION", pattern=_REGION)
    #: how old the control record may be before a commit reads it again (the fence's reaction time)
    fence_max_age_seconds: float = Field(default=2.0, alias="FENCE_MAX_AGE_SECONDS", ge=0, le=10)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        return _without_empty(data, ("PEER_REGION",))


class HealthSettings(_EnvModel):
    """What GET /health checks in this region."""

    region_role: Literal["primary", "dr"] = Field(default="primary", alias="TANDEM_REGION_ROLE")
    queue_url: str = Field(alias="TRANSACTION_QUEUE_URL", min_length=1)
    ledger_table: str = Field(alias="LEDGER_TABLE_NAME", min_length=3)


class IntakeSettings(_EnvModel):
    """The durable ingress (POST /transactions): where it records accepted messages and queues them."""

    queue_url: str = Field(alias="TRANSACTION_QUEUE_URL", min_length=1)
    ledger_table: str = Field(alias="LEDGER_TABLE_NAME", min_length=3)
    #: how long an accepted message stays readable by the other region (longer than any replay window)
    accepted_ttl_seconds: int = Field(default=2 * 86400, alias="ACCEPTED_TTL_SECONDS", ge=3600)
    #: where the record goes first: the other region's replica (empty: a single region)
    peer_region: str | None = Field(default=None, alias="PEER_REGION")
    peer_endpoint_url: str | None = Field(default=None, alias="PEER_AWS_ENDPOINT_URL")
    peer_timeout_seconds: float = Field(default=1.0, alias="PEER_TIMEOUT_SECONDS", gt=0, le=5)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        return _without_empty(data, ("PEER_REGION", "PEER_AWS_ENDPOINT_URL"))


def _without_empty(data: object, optional: tuple[str, ...]) -> object:
    """A template passes an unset optional parameter as an empty string: that means unset."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not (k in optional and v == "")}
    return data


def _loopback(host: str | None) -> bool:
    return host in {"127.0.0.1", "localhost", "::1"}


class MonitorSettings(_EnvModel):
    """What the replication monitor measures, against which thresholds, and how often it probes the peer.

    Thresholds and cadence come from template parameters. ``PROBE_COUNT`` x ``PROBE_INTERVAL_SECONDS`` is the
    probe loop of one run (6 x 10 s covers the one-minute schedule); ``PROBE_COUNT=1`` makes a run a single
    pass (what a benchmark or an operator's manual invoke wants).
    """

    region_role: Literal["primary", "dr"] = Field(default="primary", alias="TANDEM_REGION_ROLE")
    peer_region: str = Field(alias="PEER_REGION", pattern=_REGION)
    ledger_table: str = Field(alias="LEDGER_TABLE_NAME", min_length=3)
    archive_bucket: str = Field(alias="ARCHIVE_BUCKET_NAME", min_length=3)
    peer_archive_bucket: str = Field(alias="PEER_ARCHIVE_BUCKET_NAME", min_length=3)
    archive_replication_rule: str = Field(default="to-peer-region", alias="ARCHIVE_REPLICATION_RULE_ID", min_length=1)
    queue_url: str = Field(alias="TRANSACTION_QUEUE_URL", min_length=1)
    #: the in-VPC function that reads Aurora for the monitor; empty = connect directly (LEDGER_DB_* settings)
    aurora_observer_function: str | None = Field(default=None, alias="AURORA_OBSERVER_FUNCTION")
    #: this region's Aurora cluster, for the AuroraGlobalDBRPOLag metric; empty = do not query it
    ledger_db_cluster_id: str | None = Field(default=None, alias="LEDGER_DB_CLUSTER_ID")
    peer_health_url: str | None = Field(default=None, alias="PEER_HEALTH_URL")
    rpo_budget_seconds: float = Field(default=5.0, alias="RPO_BUDGET_SECONDS", gt=0)
    lag_warning_seconds: float = Field(default=2.0, alias="LAG_WARNING_SECONDS", gt=0)
    heartbeat_stale_seconds: float = Field(default=90.0, alias="HEARTBEAT_STALE_SECONDS", gt=0)
    probe_count: int = Field(default=6, alias="PROBE_COUNT", ge=1, le=12)
    probe_interval_seconds: float = Field(default=10.0, alias="PROBE_INTERVAL_SECONDS", ge=0, le=30)
    probe_timeout_seconds: float = Field(default=2.0, alias="PROBE_TIMEOUT_SECONDS", gt=0, le=10)
    #: fencing (set by the template; empty = this monitor neither fences its processor nor forwards its queue)
    processor_function: str | None = Field(default=None, alias="PROCESSOR_FUNCTION_NAME")
    processing_state_parameter: str | None = Field(default=None, alias="PROCESSING_STATE_PARAMETER", pattern=_PARAMETER)
    peer_queue_url: str | None = Field(default=None, alias="PEER_QUEUE_URL")
    #: this region's DLQ: redriven to the active region's queue while this region is fenced
    dlq_url: str | None = Field(default=None, alias="TRANSACTION_DLQ_URL")
    peer_endpoint_url: str | None = Field(default=None, alias="PEER_AWS_ENDPOINT_URL")
    #: asked for reconciliation (asynchronously) once the old region answers after an unplanned failover
    failover_handler_function: str | None = Field(default=None, alias="FAILOVER_HANDLER_FUNCTION_NAME")
    metric_window_seconds: int = Field(default=300, alias="METRIC_WINDOW_SECONDS", ge=60, le=3600)
    #: the replication metrics' period (AWS publishes them per minute; the twin's clock shrinks the minute)
    metric_period_seconds: int = Field(default=60, alias="METRIC_PERIOD_SECONDS", ge=1, le=300)
    #: the rule that invokes this region's failover handler (FailoverArmed reads its state); empty = not judged
    failover_rule_name: str | None = Field(default=None, alias="FAILOVER_RULE_NAME")

    @property
    def run_seconds(self) -> float | None:
        """How long one run's probe loop lasts, which is also the schedule period it is made to cover (6 x 10 s;
        the twin compresses both). None for a single pass: then the monitor promises the peer no cadence."""
        return self.probe_count * self.probe_interval_seconds if self.probe_count > 1 else None

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        return _without_empty(
            data,
            ("AURORA_OBSERVER_FUNCTION", "LEDGER_DB_CLUSTER_ID", "PEER_HEALTH_URL", "PROCESSOR_FUNCTION_NAME",
             "PROCESSING_STATE_PARAMETER", "PEER_QUEUE_URL", "PEER_AWS_ENDPOINT_URL", "FAILOVER_HANDLER_FUNCTION_NAME"),
        )  # fmt: skip

    @property
    def fences(self) -> bool:
        """Whether this monitor keeps its region's processing switched off while another region is active."""
        return self.processor_function is not None and self.processing_state_parameter is not None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.lag_warning_seconds >= self.rpo_budget_seconds:
            raise ValueError("LAG_WARNING_SECONDS must be below RPO_BUDGET_SECONDS")
        if self.heartbeat_stale_seconds <= 2 * self.probe_interval_seconds:
            raise ValueError("HEARTBEAT_STALE_SECONDS must exceed the heartbeat cadence (2 x PROBE_INTERVAL_SECONDS)")
        if self.peer_health_url is not None:
            url = urlsplit(self.peer_health_url)
            if not url.hostname or url.scheme not in {"https", "http"}:
                raise ValueError("PEER_HEALTH_URL must be an https:// URL")
            if url.scheme == "http" and not _loopback(url.hostname):
                raise ValueError("PEER_HEALTH_URL must use https (plain http only to a loopback address)")
        return self


class FailoverSettings(_EnvModel):
    """What the failover handler acts on: this region's and the peer's resources, and its safety limits."""

    region_role: Literal["primary", "dr"] = Field(alias="TANDEM_REGION_ROLE")
    peer_region: str = Field(alias="PEER_REGION", pattern=_REGION)
    ledger_table: str = Field(alias="LEDGER_TABLE_NAME", min_length=3)
    global_cluster_id: str = Field(alias="GLOBAL_CLUSTER_ID", min_length=1)
    ledger_db_cluster_id: str = Field(alias="LEDGER_DB_CLUSTER_ID", min_length=1)
    processor_function: str = Field(alias="PROCESSOR_FUNCTION_NAME", min_length=1)
    peer_processor_function: str = Field(alias="PEER_PROCESSOR_FUNCTION_NAME", min_length=1)
    #: the SSM parameters the app template reads as ProcessingEnabled (see tandem_core.fencing)
    processing_state_parameter: str = Field(alias="PROCESSING_STATE_PARAMETER", pattern=_PARAMETER)
    peer_processing_state_parameter: str = Field(alias="PEER_PROCESSING_STATE_PARAMETER", pattern=_PARAMETER)
    alarm_topic_arn: str = Field(alias="ALARM_TOPIC_ARN", min_length=1)
    #: the peer region's API endpoint; empty = AWS's own regional endpoints (the twin names its loopback port)
    peer_endpoint_url: str | None = Field(default=None, alias="PEER_AWS_ENDPOINT_URL")
    peer_health_url: str | None = Field(default=None, alias="PEER_HEALTH_URL")
    #: Route53's endpoint check of the peer's ingress: the witness outside this region (None: no witness)
    peer_endpoint_health_check_id: str | None = Field(default=None, alias="PEER_ENDPOINT_HEALTH_CHECK_ID")
    #: the peer's word on its ledger counts while its heartbeat is at most this old (the monitor's threshold)
    heartbeat_stale_seconds: float = Field(default=90.0, alias="HEARTBEAT_STALE_SECONDS", gt=0)
    min_delay_seconds: float = Field(default=1800.0, alias="MIN_DELAY_SECONDS", ge=0)
    lease_seconds: float = Field(default=120.0, alias="LEASE_SECONDS", gt=0)
    promotion_timeout_seconds: float = Field(default=90.0, alias="PROMOTION_TIMEOUT_SECONDS", gt=0)
    peer_timeout_seconds: float = Field(default=3.0, alias="PEER_TIMEOUT_SECONDS", gt=0, le=10)
    #: reconciliation (failover_handler.reconcile): this region's journal and queues, the peer's queues
    archive_bucket: str = Field(alias="ARCHIVE_BUCKET_NAME", min_length=3)
    queue_url: str = Field(alias="TRANSACTION_QUEUE_URL", min_length=1)
    dlq_url: str = Field(alias="TRANSACTION_DLQ_URL", min_length=1)
    peer_queue_url: str = Field(alias="PEER_QUEUE_URL", min_length=1)
    peer_dlq_url: str = Field(alias="PEER_DLQ_URL", min_length=1)
    #: the old region's journal, read in its own bucket (the replica here may still be missing a backlog)
    peer_archive_bucket: str = Field(alias="PEER_ARCHIVE_BUCKET_NAME", min_length=3)
    #: how far before the last execution's start the journal is read (Aurora's lag is seconds; a margin)
    reconcile_lookback_seconds: float = Field(default=3600.0, alias="RECONCILE_LOOKBACK_SECONDS", gt=0)
    reconcile_budget_seconds: float = Field(default=90.0, alias="RECONCILE_BUDGET_SECONDS", gt=0)
    #: once the old region is seen fenced, how long its in-flight batches may still commit (processor Timeout
    #: + the fence's cache age, with a margin)
    reconcile_quiet_seconds: float = Field(default=35.0, alias="RECONCILE_QUIET_SECONDS", ge=0)
    #: the ingress records what it accepts in the global table: an unplanned failover applies the peer's
    durable_ingress: Literal["enabled", "disabled"] = Field(default="disabled", alias="DURABLE_INGRESS")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        return _without_empty(data, ("PEER_AWS_ENDPOINT_URL", "PEER_HEALTH_URL"))

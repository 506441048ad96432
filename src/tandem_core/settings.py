"""Settings read once from the environment (the template's Environment block, or the twin's).

One model per concern; each function's handler builds the one it needs and caches it, so a bad
configuration fails at the first invocation with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete or wrong; nothing can be processed until it is fixed."""


class _EnvModel(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        source = os.environ if env is None else env
        try:
            return cls.model_validate(dict(source))
        except ValidationError as exc:
            names = "; ".join(
                f"{err['loc'][0] if err['loc'] else 'settings'}: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors(include_url=False, include_input=False)
            )
            raise ConfigurationError(f"{cls.__name__}: bad or missing environment variables: {names}") from None


class AwsSettings(_EnvModel):
    """Where the AWS APIs are: the real ones, or an emulator through the standard AWS_ENDPOINT_URL."""

    region: str = Field(alias="AWS_REGION", min_length=1)
    endpoint_url: str | None = Field(default=None, alias="AWS_ENDPOINT_URL")


class LedgerDbSettings(_EnvModel):
    """How to reach the ledger database (Aurora PostgreSQL writer, or the local server)."""

    host: str = Field(alias="LEDGER_DB_HOST", min_length=1)
    port: int = Field(default=5432, alias="LEDGER_DB_PORT", gt=0, lt=65536)
    name: str = Field(default="ledger", alias="LEDGER_DB_NAME", min_length=1)
    auth: Literal["secret", "iam"] = Field(default="secret", alias="LEDGER_DB_AUTH")
    secret_arn: str | None = Field(default=None, alias="LEDGER_DB_SECRET_ARN")
    user: str | None = Field(default=None, alias="LEDGER_DB_USER")
    sslmode: Literal["disable", "require", "verify-full"] = Field(default="require", alias="LEDGER_DB_SSLMODE")
    sslrootcert: str | None = Field(default=None, alias="LEDGER_DB_SSLROOTCERT")
    timeout: float = Field(default=10.0, alias="LEDGER_DB_TIMEOUT", gt=0)
    auto_migrate: bool = Field(default=True, alias="LEDGER_AUTO_MIGRATE")

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.auth == "secret" and not self.secret_arn:
            raise ValueError("LEDGER_DB_SECRET_ARN is required when LEDGER_DB_AUTH=secret")
        if self.auth == "iam" and not self.user:
            raise ValueError("LEDGER_DB_USER is required when LEDGER_DB_AUTH=iam")
        return self


class ProcessorSettings(_EnvModel):
    """Everything the transaction processor needs besides the database."""

    region_role: Literal["primary", "dr"] = Field(default="primary", alias="TANDEM_REGION_ROLE")
    ledger_table: str = Field(alias="LEDGER_TABLE_NAME", min_length=3)
    archive_bucket: str = Field(alias="ARCHIVE_BUCKET_NAME", min_length=3)


class HealthSettings(_EnvModel):
    """What GET /health checks in this region."""

    region_role: Literal["primary", "dr"] = Field(default="primary", alias="TANDEM_REGION_ROLE")
    queue_url: str = Field(alias="TRANSACTION_QUEUE_URL", min_length=1)
    ledger_table: str = Field(alias="LEDGER_TABLE_NAME", min_length=3)

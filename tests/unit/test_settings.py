"""Configuration errors name the variable, so a bad deploy is diagnosed from the first log line."""

from __future__ import annotations

import pytest

from tandem_core.settings import ConfigurationError, LedgerDbSettings, ProcessorSettings


def test_secret_auth_needs_the_secret_arn() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_DB_SECRET_ARN is required"):
        LedgerDbSettings.from_env({"LEDGER_DB_HOST": "db"})


def test_iam_auth_needs_a_user() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_DB_USER is required"):
        LedgerDbSettings.from_env({"LEDGER_DB_HOST": "db", "LEDGER_DB_AUTH": "iam"})


def test_unknown_sslmode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_DB_SSLMODE"):
        LedgerDbSettings.from_env({"LEDGER_DB_HOST": "db", "LEDGER_DB_SECRET_ARN": "arn", "LEDGER_DB_SSLMODE": "x"})


def test_defaults_are_safe_for_aws() -> None:
    s = LedgerDbSettings.from_env({"LEDGER_DB_HOST": "db", "LEDGER_DB_SECRET_ARN": "arn:secret"})
    assert (s.port, s.sslmode, s.auth, s.name) == (5432, "require", "secret", "ledger")


def test_missing_processor_variables_are_named() -> None:
    with pytest.raises(ConfigurationError) as err:
        ProcessorSettings.from_env({})
    assert "LEDGER_TABLE_NAME" in str(err.value)
    assert "ARCHIVE_BUCKET_NAME" in str(err.value)

"""A twin per test module, started and stopped through the same launcher the CLI uses."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pg8000.native
import pytest

from tandem.twin import launcher


@pytest.fixture(scope="module")
def twin_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tandem-twin-test-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def twin(twin_dir: Path) -> Iterator[dict[str, Any]]:
    status = launcher.start(twin_dir, scale=600.0)
    try:
        yield status
    finally:
        launcher.stop(twin_dir)


def aws(status: dict[str, Any], region: str, service: str) -> Any:
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=status["regions"][region]["endpoint"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def pg(status: dict[str, Any], region: str, timeout: float = 5) -> pg8000.native.Connection:
    """Connect with the libpq URI that `tandem twin status --json` prints."""
    from urllib.parse import urlsplit

    uri = urlsplit(status["regions"][region]["postgres"])
    return pg8000.native.Connection(
        user=uri.username or "", password=uri.password, host=uri.hostname or "", port=uri.port or 5432,
        database=uri.path.lstrip("/"), timeout=timeout,
    )  # fmt: skip

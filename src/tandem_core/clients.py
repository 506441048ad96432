"""The one place that builds AWS clients.

Standard configuration only (AWS_REGION, AWS_ENDPOINT_URL, credentials chain), so the same code talks to
real AWS and to the local emulator. Clients are cached per (service, region, endpoint) because building
one costs milliseconds and Lambda reuses the process across invocations.

Clients come from botocore's session, the layer boto3's ``client()`` hands out too: importing boto3 also
imports s3transfer (and multiprocessing with it), ~45 ms of every cold start for S3 transfer helpers nothing
here uses.
"""

from __future__ import annotations

import functools
from typing import Any

import botocore.session
from botocore.config import Config

from tandem_core.settings import AwsSettings

# Fail fast: a dead region must not stall an invocation for minutes (DESIGN §4 rule 1).
_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})


@functools.cache
def session() -> botocore.session.Session:
    return botocore.session.get_session()


@functools.cache
def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    """A cached client for ``service`` in ``region`` (``endpoint_url`` None = AWS's own)."""
    return session().create_client(service, region_name=region, endpoint_url=endpoint_url, config=_CONFIG)


def client_for(service: str, aws: AwsSettings) -> Any:
    return client(service, aws.region, aws.endpoint_url)


@functools.cache
def peer_client(service: str, region: str, endpoint_url: str | None, timeout: float) -> Any:
    """A client for the *other* region: one attempt, short timeouts - it may be the region that is gone, and
    nothing on the failover's critical path may wait for it (DESIGN §4 rule 1)."""
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1, "mode": "standard"})
    return session().create_client(service, region_name=region, endpoint_url=endpoint_url, config=config)

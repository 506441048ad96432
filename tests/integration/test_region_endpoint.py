"""A region's endpoint: an outage cuts what is open, and what has ended is forgotten (a twin runs for hours)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from botocore.exceptions import EndpointConnectionError

from tandem.local import emulator_client
from tandem.localpg import free_port
from tandem.twin.regions import RegionEndpoint

REGION = "us-west-2"


@pytest.fixture
def endpoint() -> Iterator[RegionEndpoint]:
    server = RegionEndpoint(REGION, free_port())
    server.start()
    try:
        urllib.request.urlopen(f"{server.url}/moto-api/reset", data=b"", timeout=10).close()
        yield server
    finally:
        server.stop()


def test_an_outage_refuses_calls_and_a_restore_answers_with_the_state_it_had(endpoint: RegionEndpoint) -> None:
    sqs = emulator_client("sqs", REGION, endpoint.url)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    endpoint.stop()
    with pytest.raises(EndpointConnectionError):
        sqs.get_queue_url(QueueName="q")
    endpoint.start()
    assert sqs.get_queue_url(QueueName="q")["QueueUrl"] == url


def test_connections_that_ended_are_not_kept_for_the_next_outage(endpoint: RegionEndpoint) -> None:
    sqs = emulator_client("sqs", REGION, endpoint.url)
    for i in range(30):  # the emulator closes each connection after its reply
        sqs.create_queue(QueueName=f"q{i}")
    server = endpoint._server  # what an outage would cut: only connections still open
    assert server is not None
    with server.lock:
        assert len(server.clients) <= 1

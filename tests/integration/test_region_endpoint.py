"""A region's endpoint: an outage cuts what is open, and what has ended is forgotten (a twin runs for hours)."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from tandem.local import emulator_client
from tandem.twin.regions import RegionEndpoint

REGION = "us-west-2"


def test_an_outage_refuses_calls_and_a_restore_answers_with_the_state_it_had(region_endpoint: RegionEndpoint) -> None:
    sqs = emulator_client("sqs", REGION, region_endpoint.url)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    region_endpoint.stop()
    with pytest.raises(EndpointConnectionError):
        sqs.get_queue_url(QueueName="q")
    region_endpoint.start()
    assert sqs.get_queue_url(QueueName="q")["QueueUrl"] == url


def test_connections_that_ended_are_not_kept_for_the_next_outage(region_endpoint: RegionEndpoint) -> None:
    sqs = emulator_client("sqs", REGION, region_endpoint.url)
    for i in range(30):  # the emulator closes each connection after its reply
        sqs.create_queue(QueueName=f"q{i}")
    server = region_endpoint._server  # what an outage would cut: only connections still open
    assert server is not None
    with server.lock:
        assert len(server.clients) <= 1

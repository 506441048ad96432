"""The twin's ingress serves the HTTP API as API Gateway imports its definition (defect 4 of a real deploy):
routes come from the API's body (as AWS's SAM transform builds it), a redeploy replaces them, and a route
declared beside the body is refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tandem.local import emulator_client
from tandem.localpg import free_port
from tandem.template import TemplateError
from tandem.twin.ingress import Ingress
from tandem.twin.regions import RegionEndpoint

HEALTH_ARN = "arn:aws:lambda:us-west-2:123456789012:function:app-region-health"


def _definition(queue_url: str, *, with_transactions: bool = True) -> dict[str, Any]:
    """The ``Body`` SAM's transform makes of the template's DefinitionBody and the health function's event."""
    post = {"x-amazon-apigateway-integration": {
        "type": "aws_proxy", "integrationSubtype": "SQS-SendMessage", "payloadFormatVersion": "1.0",
        "requestParameters": {"QueueUrl": queue_url, "MessageBody": "$request.body"}}}  # fmt: skip
    uri = f"arn:aws:apigateway:us-west-2:lambda:path/2015-03-31/functions/{HEALTH_ARN}/invocations"
    health = {"x-amazon-apigateway-integration": {"type": "aws_proxy", "uri": uri, "payloadFormatVersion": "2.0"}}
    paths: dict[str, Any] = {"/health": {"get": health}}
    if with_transactions:
        paths["/transactions"] = {"post": post}
    return {"openapi": "3.0.1", "paths": paths}


@pytest.fixture
def ingress(region_endpoint: RegionEndpoint) -> Iterator[tuple[Ingress, Any]]:
    sqs = emulator_client("sqs", region_endpoint.region, region_endpoint.url)
    functions = {HEALTH_ARN: "region_health"}
    gate = Ingress(
        region_endpoint.region, free_port(), lambda *_a: {"ok": False}, lambda _s: sqs, functions.__getitem__
    )
    yield gate, sqs
    gate.stop()


def _post(url: str, body: str) -> int:
    request = urllib.request.Request(f"{url}/transactions", data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_post_transactions_comes_from_the_api_definition(ingress: tuple[Ingress, Any]) -> None:
    gate, sqs = ingress
    queue_url = sqs.create_queue(QueueName="txn")["QueueUrl"]
    gate.create_api(None, "IngressApi", {"Body": _definition(queue_url)})  # type: ignore[arg-type]
    assert _post(gate.url, json.dumps({"transaction_id": "t-1"})) == 200
    (message,) = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"]) == {"transaction_id": "t-1"}


def test_a_redeploy_serves_the_definition_as_it_is_now(ingress: tuple[Ingress, Any]) -> None:
    """An update re-imports the body: a route that left it stops answering, as in API Gateway."""
    gate, sqs = ingress
    queue_url = sqs.create_queue(QueueName="txn")["QueueUrl"]
    gate.create_api(None, "IngressApi", {"Body": _definition(queue_url)})  # type: ignore[arg-type]
    gate.create_api(None, "IngressApi", {"Body": _definition(queue_url, with_transactions=False)})  # type: ignore[arg-type]
    assert _post(gate.url, "{}") == 404
    with pytest.raises(urllib.error.HTTPError) as health:  # routed (to a function that fails here), not 404:
        urllib.request.urlopen(f"{gate.url}/health", timeout=5)
    assert health.value.code == 500


def test_a_route_beside_the_definition_is_refused(ingress: tuple[Ingress, Any]) -> None:
    gate, _ = ingress
    route = gate.creators()["AWS::ApiGatewayV2::Route"]
    with pytest.raises(TemplateError, match="POST /transactions is declared beside the API's definition"):
        route(None, "IngressTransactionsRoute", {"RouteKey": "POST /transactions"})  # type: ignore[arg-type]

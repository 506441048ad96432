"""Each region's ingress (the template's HTTP API) on its own loopback port: the edge producers and probes use.

Routes come from the API's definition as deployed (the ``Body`` SAM's transform builds from the template's
``DefinitionBody`` and the functions' ``HttpApi`` events): ``POST /transactions``, an ``SQS-SendMessage``
integration straight to the queue (a 200 means the message is durable), and ``GET /health``, a Lambda proxy
integration of region_health (API Gateway's payload format 2.0).
The ingress dies with its region in an outage, or alone (``tandem twin outage REGION --only ingress``): port
closed, connections cut; it comes back on restore.
SigV4 on ``POST /transactions`` is not checked: the twin has no IAM to check it against.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from tandem.template import TemplateError
from tandem.twin.provision import Creator, Deployment
from tandem.twin.regions import TrackingServer

Invoke = Callable[[str, str, dict[str, Any]], dict[str, Any]]  # (region, function, event) -> reply


class Ingress:
    """One region's HTTP API: a fixed loopback port (known before deployment, so peers can be told it)."""

    def __init__(
        self,
        region: str,
        port: int,
        invoke: Invoke,
        client: Callable[[str], Any],
        function_of: Callable[[str], str] = lambda arn: arn,
        advertised_url: str | None = None,
    ) -> None:
        """``function_of(arn)``: the function (as ``invoke`` names it) behind a Lambda integration's ARN;
        ``advertised_url``: the API's ``ApiEndpoint`` - where the other region reaches it (the border's relay,
        :mod:`tandem.twin.border`); producers and probes use :attr:`url`."""
        self.region, self.port = region, port
        self.advertised_url = advertised_url
        self._function_of = function_of
        self.api_id = f"twin{uuid.uuid4().hex[:6]}"
        self._invoke, self._client = invoke, client
        self._routes: dict[tuple[str, str], tuple[str, str]] = {}  # (method, path) -> ("sqs", url) | ("fn", name)
        self._server: TrackingServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is None:
            self._server = TrackingServer("127.0.0.1", self.port, self._app)
            self._server.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.kill()

    # ---------------------------------------------------------------- the provisioner's creators
    def creators(self) -> dict[str, Creator]:
        """The HTTP API's resources, served by this ingress when its region's app stack is deployed."""
        return {
            "AWS::ApiGatewayV2::Api": self.create_api,
            "AWS::ApiGatewayV2::Stage": self.create_stage,
            "AWS::ApiGatewayV2::Integration": self.refuse_beside_definition,
            "AWS::ApiGatewayV2::Route": self.refuse_beside_definition,
        }

    def create_api(self, d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:  # noqa: ARG002
        """The API as API Gateway imports its definition (``Body``): every deploy replaces the routes with the
        definition's - SQS-SendMessage service integrations and Lambda proxy integrations."""
        routes: dict[tuple[str, str], tuple[str, str]] = {}
        for path, methods in (props.get("Body") or {}).get("paths", {}).items():
            for method, operation in methods.items():
                integration = operation.get("x-amazon-apigateway-integration") or {}
                key = (method.upper(), str(path))
                if integration.get("integrationSubtype") == "SQS-SendMessage":
                    routes[key] = ("sqs", str(integration["requestParameters"]["QueueUrl"]))
                elif integration.get("type") == "aws_proxy" and "/functions/" in str(integration.get("uri", "")):
                    function_arn = str(integration["uri"]).split("/functions/", 1)[1].rsplit("/invocations", 1)[0]
                    routes[key] = ("fn", self._function_of(function_arn))
                else:
                    where = f"{logical}: {method.upper()} {path}"
                    raise TemplateError(f"{where}: the twin serves SQS-SendMessage and Lambda proxy integrations")
        self._routes = routes
        self.start()
        return {"Ref": self.api_id, "ApiEndpoint": self.advertised_url or self.url, "ApiId": self.api_id}

    @staticmethod
    def create_stage(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:  # noqa: ARG004
        """The stage (SAM's ``$default``): the twin serves one stage per API, at the ingress's root."""
        return {"Ref": str(props.get("StageName", "$default"))}

    @staticmethod
    def refuse_beside_definition(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:  # noqa: ARG004
        """A route or integration declared beside an HTTP API: API Gateway drops it at the next import of the
        API's definition (aws/serverless-application-model#1971), and the twin serves routes from the
        definition only, so refuse it here."""
        raise TemplateError(
            f"{logical}: {props.get('RouteKey') or 'an integration'} is declared beside the API's definition; "
            "API Gateway re-imports the definition on every update and drops it. Put it in DefinitionBody."
        )

    # ---------------------------------------------------------------- serving
    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        target = self._routes.get((request.method, request.path))
        if target is None:
            response = _json(404, {"message": "Not Found"})
        elif target[0] == "sqs":
            response = self._send(target[1], request)
        else:
            response = self._call(target[1], request)
        return response(environ, start_response)

    def _send(self, queue_url: str, request: Request) -> Response:
        body = request.get_data(as_text=True)
        if not body:
            return _json(400, {"message": "the message body is empty"})
        sent = self._client("sqs").send_message(QueueUrl=queue_url, MessageBody=body)
        return _json(200, {"SendMessageResponse": {"SendMessageResult": {"MessageId": sent["MessageId"]}}})

    def _call(self, function: str, request: Request) -> Response:
        event = {
            "version": "2.0", "routeKey": f"{request.method} {request.path}", "rawPath": request.path,
            "rawQueryString": request.query_string.decode(), "headers": dict(request.headers),
            "requestContext": {
                "apiId": self.api_id, "http": {"method": request.method, "path": request.path, "protocol": "HTTP/1.1",
                "sourceIp": request.remote_addr or "127.0.0.1", "userAgent": request.user_agent.string},
                "requestId": str(uuid.uuid4()), "routeKey": f"{request.method} {request.path}", "stage": "$default",
                "timeEpoch": int(time.time() * 1000),
            },
            "body": request.get_data(as_text=True) or None, "isBase64Encoded": False,
        }  # fmt: skip
        reply = self._invoke(self.region, function, event)
        if not reply.get("ok"):
            return _json(500, {"message": "Internal Server Error"})
        result = reply.get("response")
        if isinstance(result, dict) and "statusCode" in result:
            headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
            return Response(result.get("body") or "", status=int(result["statusCode"]), headers=headers)
        return _json(200, result)


def _json(code: int, body: Any) -> Response:
    return Response(json.dumps(body, default=str), status=code, mimetype="application/json")

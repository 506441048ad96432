"""The twin's control API on loopback (what `tandem twin …`, the drill and `tandem invoke` call).

Routing is werkzeug's (the WSGI toolkit moto's server is built on), so each route is one line and one
method; errors are JSON ``{"error": ...}`` with 400 for a request the twin refuses and 500 for a bug.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from typing import Any, Protocol

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from tandem.twin.promotions import check_delay, check_fail_count

log = logging.getLogger("tandem.twin")


class Controlled(Protocol):
    """What the control API drives (the Twin)."""

    def status(self) -> dict[str, Any]: ...
    def outage(self, region: str, only: str | None = None) -> None: ...
    def restore(self, region: str, backlog_pace: float | None = ...) -> None: ...
    def partition(self, region: str) -> None: ...
    def heal(self, region: str, backlog_pace: float | None = ...) -> None: ...
    def replication(self, action: str, store: str | None = None) -> None: ...
    def redeploy(self, region: str) -> None: ...
    def invoke(self, region: str, function: str, event: dict[str, Any]) -> dict[str, Any]: ...
    def inject_fault(self, region: str, function: str, after_call: str, matching: str) -> None: ...
    def fail_promotions(self, count: int) -> None: ...
    def delay_promotion(self, seconds: float) -> None: ...


ROUTES = Map([
    Rule("/status", methods=["GET"], endpoint="status"),
    Rule("/down", methods=["POST"], endpoint="down"),
    Rule("/outage/<region>", methods=["POST"], endpoint="outage"),
    Rule("/restore/<region>", methods=["POST"], endpoint="restore"),
    Rule("/partition/<region>", methods=["POST"], endpoint="partition"),
    Rule("/heal/<region>", methods=["POST"], endpoint="heal"),
    Rule("/replication/<action>", methods=["POST"], endpoint="replication"),
    Rule("/replication/<action>/<store>", methods=["POST"], endpoint="replication"),
    Rule("/invoke/<region>/<function>", methods=["POST"], endpoint="invoke"),
    Rule("/deploy/<region>", methods=["POST"], endpoint="deploy"),
    Rule("/faults/kill/<region>/<function>", methods=["POST"], endpoint="kill_fault"),
    Rule("/faults/promotion", methods=["POST"], endpoint="promotion_fault"),
])  # fmt: skip


class ControlApi:
    def __init__(self, twin: Controlled, shutdown: threading.Event) -> None:
        self._twin = twin
        self._shutdown = shutdown

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            endpoint, args = ROUTES.bind_to_environ(environ).match()
            body = getattr(self, f"_{endpoint}")(request, **args)
            response = _json(200, body)
        except NotFound:
            response = _json(404, {"error": f"no such action {request.method} {request.path}"})
        except HTTPException as exc:
            response = _json(exc.code or 400, {"error": exc.description})
        except ValueError as exc:
            response = _json(400, {"error": str(exc)})
        except Exception as exc:
            log.exception("control request failed")
            response = _json(500, {"error": f"{type(exc).__name__}: {exc}"})
        return response(environ, start_response)

    def _status(self, _request: Request) -> dict[str, Any]:
        return self._twin.status()

    def _down(self, _request: Request) -> dict[str, Any]:
        self._shutdown.set()
        return {"stopping": True}

    def _outage(self, request: Request, region: str) -> dict[str, Any]:
        """``{"only": "database" | "ingress" | "functions"}`` (optional): that part of the region only."""
        only = _object(request, "the outage").get("only")
        if only is not None and not isinstance(only, str):
            raise ValueError(f"only must be database, ingress or functions (or null: the whole region), not {only!r}")
        self._twin.outage(region, only)
        return self._twin.status()

    def _restore(self, request: Request, region: str) -> dict[str, Any]:
        """``{"backlog_pace": N}`` (optional): replicated changes per emulated second; null: all at once."""
        return self._released(self._twin.restore, request, region, "the restore")

    def _partition(self, _request: Request, region: str) -> dict[str, Any]:
        self._twin.partition(region)
        return self._twin.status()

    def _heal(self, request: Request, region: str) -> dict[str, Any]:
        """As restore: ``{"backlog_pace": N}`` optional."""
        return self._released(self._twin.heal, request, region, "the heal")

    def _released(self, release: Any, request: Request, region: str, what: str) -> dict[str, Any]:
        spec = _object(request, what)
        if "backlog_pace" in spec:
            release(region, _pace(spec["backlog_pace"]))
        else:
            release(region)
        return self._twin.status()

    def _replication(self, _request: Request, action: str, store: str | None = None) -> dict[str, Any]:
        self._twin.replication(action, store)
        return self._twin.status()

    def _deploy(self, _request: Request, region: str) -> dict[str, Any]:
        self._twin.redeploy(region)
        return self._twin.status()

    def _invoke(self, request: Request, region: str, function: str) -> dict[str, Any]:
        return self._twin.invoke(region, function, _object(request, "the event"))

    def _kill_fault(self, request: Request, region: str, function: str) -> dict[str, Any]:
        """``{"after_call": X-Amz-Target, "matching": text}``: see :mod:`tandem.twin.faults`."""
        spec = _object(request, "the fault")
        self._twin.inject_fault(region, function, str(spec.get("after_call", "")), str(spec.get("matching", "")))
        return self._twin.status()

    def _promotion_fault(self, request: Request) -> dict[str, Any]:
        """``{"fail": N}``: the next N Aurora promotions fail (0 clears it); ``{"delay_seconds": S}``: the next
        promotion moves the writer S emulated seconds late (0 clears it). Either or both; neither: fail 1."""
        spec = _object(request, "the fault")
        delay = check_delay(spec["delay_seconds"]) if "delay_seconds" in spec else None
        fail = check_fail_count(spec.get("fail", 1)) if "fail" in spec or delay is None else None
        if fail is not None:  # both checked before either is set
            self._twin.fail_promotions(fail)
        if delay is not None:
            self._twin.delay_promotion(delay)
        return self._twin.status()


def _object(request: Request, what: str) -> dict[str, Any]:
    try:
        value = json.loads(request.get_data() or b"{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def _pace(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"backlog_pace must be a number > 0 (changes per emulated second) or null, not {value!r}")
    return float(value)


def _json(code: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, default=str), status=code, mimetype="application/json")


def serve(twin: Controlled, shutdown: threading.Event) -> BaseWSGIServer:
    """Start the API on a free loopback port in a thread; the server's ``port`` goes into twin.json."""
    server = make_server("127.0.0.1", 0, ControlApi(twin, shutdown), threaded=True)
    serving = functools.partial(server.serve_forever, poll_interval=0.05)  # `down` returns in 0.05 s, not 0.5
    threading.Thread(target=serving, name="twin-control", daemon=True).start()
    return server

"""Lambda ``Invoke`` of a twin function reaches the twin's worker (moto 5.2.5 would start a Docker container).

The replication monitor invokes its in-VPC Aurora reader, and operators invoke the failover handler, through
the real Lambda API; in the twin that call must run the function's real code in its region's worker. The
installed invoker gets (region, function name, event, invocation type) and returns the worker's reply
(``{"ok": True, "response": ...}`` or a function error), which becomes Lambda's response: the payload, and
``X-Amz-Function-Error: Unhandled`` with ``{"errorMessage", "errorType"}`` for an error. ``Event`` invocations
are handed over and answered 202 at once; ``DryRun`` checks the function exists (204).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from moto.awslambda.models import LambdaFunction

from tandem import moto_ext

#: (region, function name, event, invocation type) -> the worker's reply; None for Event invocations.
Invoker = Callable[[str, str, Any, str], dict[str, Any] | None]

_invoker: list[Invoker] = []


def set_invoker(invoker: Invoker | None) -> None:
    _invoker.clear()
    if invoker is not None:
        _invoker.append(invoker)


def _invoke(self: LambdaFunction, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
    if not _invoker:
        raise RuntimeError("no twin invoker is installed: Invoke cannot run a function here")
    event = json.loads(body) if body else {}
    kind = str(request_headers.get("x-amz-invocation-type") or request_headers.get("X-Amz-Invocation-Type")
               or "RequestResponse")  # fmt: skip
    if kind == "DryRun":
        return b""
    reply = _invoker[0](self.region, self.function_name, event, kind)
    if reply is None:  # Event: accepted
        return b""
    if reply.get("ok"):
        return json.dumps(reply.get("response"), default=str).encode()
    response_headers["x-amz-function-error"] = "Unhandled"
    error = {"errorMessage": reply.get("errorMessage"), "errorType": reply.get("errorType")}
    return json.dumps(error).encode()


@functools.cache
def install() -> None:
    """Route moto's LambdaFunction.invoke to the installed invoker (idempotent)."""
    moto_ext.apply()
    LambdaFunction.invoke = _invoke  # type: ignore[method-assign]

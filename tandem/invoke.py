"""`make invoke` / `tandem invoke`: one function, one event file, Docker-free (`sam local invoke`'s job).

Starts a local region (moto server + PostgreSQL), runs the unmodified handler with the template's
environment, prints the handler's JSON response as the last line of stdout, and stops what it started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tandem.lambda_runtime import HANDLERS, LambdaContext, load_handler
from tandem.local import function_environment, local_region


class InvokeError(ValueError):
    pass


def read_event(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvokeError(f"cannot read event file {path}: {exc.strerror}") from None
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvokeError(f"event file {path} is not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvokeError(f"event file {path} must hold a JSON object (the event), not {type(event).__name__}")
    return event


def invoke(function: str, event_path: Path, region: str = "us-east-1") -> tuple[Any, bool]:
    """Returns (response, ok). A handler exception becomes Lambda's error shape, as sam local invoke shows."""
    if function not in HANDLERS:
        raise InvokeError(f"unknown function {function!r}; known: {', '.join(sorted(HANDLERS))}")
    event = read_event(event_path)
    with local_region(region) as local, function_environment(local.function_env(function)):
        handler = load_handler(function)
        try:
            return handler(event, LambdaContext(function_name=f"tandem-{function}", region=region)), True
        except Exception as exc:
            return {"errorMessage": str(exc), "errorType": type(exc).__name__}, False

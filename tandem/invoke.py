"""`make invoke` / `tandem invoke`: one function, one event file, Docker-free (`sam local invoke`'s job).

The event goes to the function's worker in the twin (the unmodified handler with that region's
environment from the template); the handler's logs go to the worker's log in the twin's state directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tandem.lambda_runtime import functions
from tandem.twin import launcher
from tandem.twin.control import call, default_state_dir


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


def invoke(
    function: str, event_path: Path, region: str = "us-east-1", state_dir: Path | None = None
) -> tuple[Any, bool]:
    """Run ``function`` in ``region`` of the twin; returns (response, ok).

    Uses the running twin, or starts one for this call and stops it afterwards. A handler exception comes
    back in Lambda's error shape, as ``sam local invoke`` shows it.
    """
    if function not in functions():
        raise InvokeError(f"unknown function {function!r}; template.yaml has {', '.join(sorted(functions()))}")
    event = read_event(event_path)
    state_dir = state_dir or default_state_dir()
    with launcher.ensure_running(state_dir):
        reply = call(state_dir, "POST", f"/invoke/{region}/{function}", body=event)
    if reply.get("ok"):
        return reply["response"], True
    return {"errorMessage": reply.get("errorMessage"), "errorType": reply.get("errorType")}, False

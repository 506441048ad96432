"""A function worker: one process per (region, function), the unmodified handler, that region's environment.

Protocol with the twin daemon: one JSON event per line on stdin, one JSON reply per line on the original
stdout - ``{"ok": true, "response": ...}`` or ``{"ok": false, "errorType": ..., "errorMessage": ...}`` as the
Lambda runtime reports a function error. The handler's own output (Powertools logs, EMF) goes to stderr,
which the daemon writes to the worker's log file.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def serve(function: str, region: str) -> int:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # everything the handler prints -> the log

    from tandem.lambda_runtime import LambdaContext, load_handler

    handler = load_handler(function)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            context = LambdaContext(function_name=f"tandem-{function}", region=region)
            reply: dict[str, Any] = {"ok": True, "response": handler(event, context)}
        except Exception as exc:
            reply = {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc)}
        sys.stdout.flush()
        replies.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2]))

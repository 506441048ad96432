"""Runs an unmodified handler the way the Lambda runtime does: event dict in, JSON-able response out."""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HANDLERS = {
    "transaction_processor": "transaction_processor.app.lambda_handler",
    "region_health": "region_health.app.lambda_handler",
}


@dataclass
class LambdaContext:
    """The attributes of the runtime's context object that handlers and Powertools read."""

    function_name: str
    region: str
    timeout_s: float = 30.0
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.invoked_function_arn = f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(function: str) -> Callable[[dict[str, Any], Any], Any]:
    """Import the handler as a new execution environment would (a cold start).

    Lambda imports the module in a fresh process with the function's environment already set; here the
    module is (re)imported after the caller has set the environment, and the cached AWS clients are
    dropped, so module-level state (Logger, Metrics, cached settings) reflects this environment.
    """
    if function not in HANDLERS:
        raise KeyError(f"unknown function {function!r}; known: {', '.join(sorted(HANDLERS))}")
    module_name, _, attr = HANDLERS[function].rpartition(".")
    from tandem_core import clients

    clients.client.cache_clear()
    clients.session.cache_clear()  # a new environment resolves its credentials afresh
    module = sys.modules.get(module_name)
    module = importlib.reload(module) if module is not None else importlib.import_module(module_name)
    handler: Callable[[dict[str, Any], Any], Any] = getattr(module, attr)
    return handler

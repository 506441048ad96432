"""What a handler does at init to keep its cold start short (measured by `make bench`: cold_start_vs_boto3).

Two things, for every function:

- **The cyclic garbage collector is off while what lasts is built.** A cold start builds tens of thousands of
  objects that live as long as the execution environment - modules, botocore's service models, the clients -
  and the collector walks them again and again while they are being built. A handler module turns it off on its
  first line and, at its end, calls :func:`end_of_init`; what the first invocation builds (settings, clients)
  goes through :func:`lasting`. Both freeze what was built (``gc.freeze``: out of every later collection, warm
  invocations included). Anything frozen that was garbage stays: a one-off.
- **The X-Ray SDK only when tracing is on.** Powertools' ``Tracer()`` imports it when it is built, even
  disabled (~100 ms); :func:`tracer` builds one only when ``POWERTOOLS_TRACE_DISABLED`` is false (template
  parameter ``Tracing=Active``).

Imports nothing heavy at module level: a handler imports it before the rest.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any


def end_of_init() -> None:
    """Call at the end of a handler module (which turned the collector off on its first line)."""
    gc.freeze()
    gc.enable()


@contextlib.contextmanager
def lasting() -> Iterator[None]:
    """Build what lives as long as the execution environment: no cyclic collection meanwhile, frozen after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def tracer(service: str | None = None) -> Any:
    """Powertools' Tracer when tracing is on, else None (and the X-Ray SDK is never imported)."""
    from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

    if resolve_truthy_env_var_choice(os.getenv("POWERTOOLS_TRACE_DISABLED", "false")):
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=service)


def traced(tracer: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The handler decorator: Powertools' ``capture_lambda_handler`` when there is a tracer, nothing otherwise."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        return handler if tracer is None else tracer.capture_lambda_handler(handler)

    return decorate

"""The peer's ingress health, seen from here: a plain HTTPS GET with a short timeout.

200 is healthy; anything else - another status, a timeout, a refused connection, a TLS failure - is not.
Redirects are not followed: the health endpoint answers directly, and a redirect is not an answer.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from typing import Any

from replication_monitor.monitor import ProbeResult


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - a redirect is a failed probe
        return None


class HttpProber:
    """GET <url>; certificate verified against the system trust store (the peer's API has a public one)."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=ssl.create_default_context())
        )

    def probe(self, url: str, timeout: float) -> ProbeResult:
        request = urllib.request.Request(url, method="GET", headers={"user-agent": "tandem-replication-monitor"})  # noqa: S310 - http(s) only, checked by the settings
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status = int(response.status)
                return ProbeResult(status == 200, status, None if status == 200 else f"HTTP {status}")
        except urllib.error.HTTPError as exc:
            return ProbeResult(False, exc.code, f"HTTP {exc.code}")
        except (urllib.error.URLError, TimeoutError, ssl.SSLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return ProbeResult(False, None, f"{type(reason).__name__}: {reason}"[:200])

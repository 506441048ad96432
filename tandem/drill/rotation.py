"""The master secret rotated in the middle of a drill's traffic, and what that must leave behind.

The drill calls ``RotateSecret`` on the primary's master secret - the call Secrets Manager makes on its 30-day
schedule - while producers send. Nothing of the traffic may notice (the functions log in with IAM tokens as
their own roles, never with this secret): the drill's other invariants say so. This one says the rotation
itself held: it completed, the secret's current version is the one it made, and the database the drill ends
on (the active region's cluster, which got the password through the global database) takes the new
password and refuses the old one.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pg8000.native

from tandem.drill.observe import TwinView
from tandem.twin.endpoints import READER_HOST


class MasterRotation:
    """One rotation of ``region``'s master secret, started once on its own thread."""

    def __init__(self, view: TwinView, region: str, progress: Callable[[str], None]) -> None:
        self.view, self.region, self.progress = view, region, progress
        self.started: float | None = None
        self.error: str | None = None
        self.before: dict[str, Any] | None = None
        self.version: str | None = None
        self.notes: list[str] = []
        self._over = threading.Event()
        self._lock = threading.Lock()

    def start_once(self) -> None:
        with self._lock:
            if self.started is not None:
                return
            self.started = time.time()
        threading.Thread(target=self._rotate, name="rotation", daemon=True).start()

    def _rotate(self) -> None:
        sm = self.view.client(self.region, "secretsmanager")
        arn = self.view.resource(self.region, "db_secret_arn")
        try:
            self.before = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])
            self.version = str(sm.rotate_secret(SecretId=arn)["VersionId"])
            self.progress(f"the master secret rotated mid-traffic (RotateSecret, as its schedule does): {self.version}")
        except Exception as exc:  # the invariant reports it
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._over.set()

    def finish_before(self, deadline: float) -> None:
        """Wait for a started rotation to end: the scenario's outage strikes after it, not in its middle.

        A region lost in the middle of a rotation leaves AWSPENDING behind (Secrets Manager resumes it when the
        region returns); that is not what this invariant is about, and on a loaded machine the four steps can
        outlast the traffic before the cut.
        """
        if self.started is not None:
            self._over.wait(max(0.0, deadline - time.monotonic()))

    def held(self, active: str, deadline: float) -> bool:
        """The rotation completed, its version is current, and ``active``'s cluster takes only the new password."""
        if self.started is None:
            self.notes.append("the master secret did not rotate: the traffic ended before its point")
            return False
        self.finish_before(deadline)
        if self.error is not None or self.before is None:
            self.notes.append(f"the master secret's rotation failed: {self.error or 'it did not finish'}")
            return False
        sm = self.view.client(self.region, "secretsmanager")
        current = sm.get_secret_value(SecretId=self.view.resource(self.region, "db_secret_arn"))
        after = json.loads(current["SecretString"])
        port = urlsplit(self.view.status["regions"][active]["postgres"]).port
        new_ok, old_ok = _logs_in(after, port), _logs_in(self.before, port)
        self.notes.append(
            f"the master secret rotated mid-traffic (version {self.version}); on {active}'s cluster the new password "
            f"{'logs in' if new_ok else 'is REFUSED'}, the old one {'still logs in' if old_ok else 'is refused'}"
        )
        return current["VersionId"] == self.version and new_ok and not old_ok


def _logs_in(secret: dict[str, Any], port: int | None) -> bool:
    """A login through the cluster's reader endpoint (it answers in every region), as the master user."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    try:
        pg8000.native.Connection(
            user=str(secret["username"]), password=str(secret["password"]), host=READER_HOST, port=port or 5432,
            database="postgres", ssl_context=tls, timeout=5,
        ).close()  # fmt: skip
    except pg8000.native.DatabaseError:
        return False
    return True

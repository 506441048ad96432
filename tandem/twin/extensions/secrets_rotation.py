"""Secrets Manager's hosted rotation of a PostgreSQL master user, for the twin.

infra_global rotates the ledger's master secret with ``HostedRotationLambda`` (``RotationType:
PostgreSQLSingleUser``): in AWS the ``AWS::SecretsManager-2020-07-23`` transform deploys AWS's own rotation
function, and Secrets Manager runs it - on the schedule, or when someone calls ``RotateSecret`` - in four
steps. moto would look for that function in its Lambda backend (and start a container for it), so the twin
runs the same four steps itself when ``RotateSecret`` reaches a secret whose rotation schedule is hosted
(:func:`register`, from the provisioner's creator):

- ``createSecret``: a new password from GetRandomPassword (the schedule's ``ExcludeCharacters``), staged
  ``AWSPENDING`` under the request's token;
- ``setSecret``: log in to the database the secret names (its ``host``/``port``: the cluster endpoint) with the
  current password and ``ALTER USER`` to the pending one (already set: nothing to do, as AWS's function does);
- ``testSecret``: log in with the pending password;
- ``finishSecret``: ``AWSCURRENT`` moves to the new version (the old one becomes ``AWSPREVIOUS``).

A failing step stops the rotation with ``AWSPENDING`` left on the new version, as in AWS; the next
``RotateSecret`` takes it up again. The replica in the other region reads the primary's versions (moto). The
schedule's own firing (``rate(30 days)``) is not run by the twin's clock: a drill rotates with ``RotateSecret``,
the call Secrets Manager makes on schedule.
"""

from __future__ import annotations

import functools
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pg8000.native
from moto.secretsmanager.models import FakeSecret, SecretsManagerBackend

from tandem import moto_ext

_STAGES = ("AWSCURRENT", "AWSPENDING", "AWSPREVIOUS")


@dataclass(frozen=True)
class HostedRotation:
    """What a RotationSchedule's HostedRotationLambda says the rotation function is and does."""

    function_arn: str
    exclude_characters: str
    automatically_after_days: int


_hosted: dict[str, HostedRotation] = {}  # secret ARN -> its hosted rotation
_lock = threading.Lock()


def register(secret_arn: str, rotation: HostedRotation) -> None:
    with _lock:
        _hosted[secret_arn] = rotation


def rotate(backend: SecretsManagerBackend, secret: FakeSecret, token: str, rotation: HostedRotation) -> None:
    """The four steps of AWS's PostgreSQL single-user rotation function, against ``backend``."""
    secret_id = secret.arn
    if token not in secret.versions:
        current = json.loads(backend.get_secret_value(secret_id, "", "AWSCURRENT")["SecretString"])
        password = json.loads(
            backend.get_random_password(32, rotation.exclude_characters, False, False, False, False, False, True)
        )["RandomPassword"]
        value = json.dumps({**current, "password": password})
        backend.put_secret_value(secret_id, value, None, token, ["AWSPENDING"])  # type: ignore[arg-type]
    pending = json.loads(backend.get_secret_value(secret_id, token, "AWSPENDING")["SecretString"])
    current = json.loads(backend.get_secret_value(secret_id, "", "AWSCURRENT")["SecretString"])
    if not _logs_in(pending):  # setSecret
        conn = _connect(current)
        try:
            conn.run(f"ALTER USER {pg8000.native.identifier(current['username'])} WITH PASSWORD "
                     f"{pg8000.native.literal(pending['password'])}")  # fmt: skip
        finally:
            conn.close()
    if not _logs_in(pending):  # testSecret
        raise RuntimeError(f"testSecret: the pending password of {secret_id} does not log in")
    # finishSecret
    old = next((v for v, d in secret.versions.items() if "AWSCURRENT" in d["version_stages"]), None)
    if old != token:
        backend.update_secret_version_stage(secret_id, "AWSCURRENT", old or "", token)
    # then Secrets Manager ends the rotation: AWSPENDING comes off, and a read without a stage gets the new
    # version (moto's UpdateSecretVersionStage leaves its default version where it was)
    secret.remove_version_stages_from_old_versions(["AWSPENDING"])
    secret.set_default_version_id(token)


def _connect(secret: dict[str, Any]) -> pg8000.native.Connection:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as AWS's function: TLS, the server not verified
    return pg8000.native.Connection(
        user=str(secret["username"]), password=str(secret["password"]), host=str(secret["host"]),
        port=int(secret.get("port", 5432)), database=str(secret.get("dbname") or "postgres"),
        ssl_context=context, timeout=10,
    )  # fmt: skip


def _logs_in(secret: dict[str, Any]) -> bool:
    try:
        _connect(secret).close()
    except pg8000.native.DatabaseError:
        return False
    return True


@functools.cache
def install() -> None:
    """RotateSecret on a secret with a hosted rotation runs it; every other secret is moto's."""
    moto_ext.apply()
    original = SecretsManagerBackend.rotate_secret

    def rotate_secret(
        self: SecretsManagerBackend, secret_id: str, client_request_token: str | None = None,
        rotation_lambda_arn: str | None = None, rotation_rules: dict[str, Any] | None = None,
        rotate_immediately: bool = True,
    ) -> str:  # fmt: skip
        secret = self.secrets[secret_id] if self._is_valid_identifier(secret_id) else None
        with _lock:
            rotation = _hosted.get(secret.arn) if isinstance(secret, FakeSecret) else None
        if rotation is None or not isinstance(secret, FakeSecret):  # a replica: moto refuses it, as AWS does
            return original(self, secret_id, client_request_token, rotation_lambda_arn, rotation_rules,
                            rotate_immediately)  # fmt: skip
        secret.rotation_requested = secret.rotation_enabled = True
        secret.rotation_lambda_arn = rotation.function_arn
        secret.auto_rotate_after_days = rotation.automatically_after_days
        if rotate_immediately:
            rotate(self, secret, client_request_token or str(uuid.uuid4()), rotation)
            secret.last_rotation_date = int(time.time())
        secret.next_rotation_date = int(time.time()) + rotation.automatically_after_days * 86400
        return str(secret.to_short_dict())

    SecretsManagerBackend.rotate_secret = rotate_secret  # type: ignore[method-assign]

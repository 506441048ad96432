"""Extensions and fixes to moto, pinned to the moto version we test against.

Each patch says what moto does, why it matters to us, and is applied once by :func:`apply`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable

import moto
from moto import backends

MOTO_VERSION = "5.2.5"
#: every DynamoDB item write in this process, the emulator's and the twin replicator's: one lock, one order
DYNAMODB_WRITES = threading.RLock()


def _check_version() -> None:
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"tandem's moto extensions are written for moto {MOTO_VERSION}, found {moto.__version__}: "
            "re-check every patch in tandem/moto_ext.py before changing the pin"
        )


@functools.cache
def apply() -> None:
    _check_version()
    # moto's server lists its own package directory (os.listdir + isdir per entry) on every request to
    # route it to a backend: ~5 ms per call, the largest cost of a local invocation. The list cannot
    # change while the process runs, so compute it once.
    original = backends.list_of_moto_modules
    modules: tuple[str, ...] = tuple(original())

    def cached_modules() -> Iterable[str]:
        return modules

    backends.list_of_moto_modules = cached_modules
    _hosted_zone_ids_like_aws()
    _bucket_policies_see_tls()
    _atomic_dynamodb_writes()


def _hosted_zone_ids_like_aws() -> None:
    """moto makes hosted zone ids of 22 random characters; AWS's start with ``Z`` (e.g. Z1RWWTK7Y8UDDQ), and
    infra_global's HostedZoneId parameter checks that, so a twin-made zone must look the same."""
    from moto.route53 import models

    original = models.create_route53_zone_id

    def zone_id(*args: object, **kwargs: object) -> str:
        return "Z" + str(original(*args, **kwargs))[1:]

    models.create_route53_zone_id = zone_id


def _bucket_policies_see_tls() -> None:
    """moto applies a bucket policy statement without looking at its Condition, so the archive bucket's
    "deny aws:SecureTransport=false" (infra_global) denies every request. In AWS every SDK call is TLS; the
    twin's loopback endpoints stand in for those TLS endpoints, so such a statement never applies here.
    Other statements (and conditions) are left to moto as they are."""
    import json

    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    def insecure_only(statement: dict[str, object]) -> bool:
        condition = statement.get("Condition")
        if not isinstance(condition, dict):
            return False
        flags = condition.get("Bool")
        return isinstance(flags, dict) and str(flags.get("aws:SecureTransport", "")).lower() == "false"

    def get_permission(self: FakeBucket, action: str, resource: str) -> object:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        document = json.loads(self.policy.decode())
        statements = document.get("Statement", [])
        kept = [s for s in (statements if isinstance(statements, list) else [statements]) if not insecure_only(s)]
        if not kept:
            return PermissionResult.NEUTRAL
        return IAMPolicy(json.dumps({**document, "Statement": kept})).is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]


def _atomic_dynamodb_writes() -> None:
    """moto's threaded server checks a write's ConditionExpression and applies the write without a lock, so two
    concurrent conditional writes can both pass - 50 racing invocations took the failover lock twice. DynamoDB
    evaluates the condition and writes atomically; so must the emulator. One lock for every item write of every
    table (put, update, delete, transactions; BatchWriteItem goes through put/delete) is plenty on one machine."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = DYNAMODB_WRITES
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        def atomic(*args: object, _original: object = original, **kwargs: object) -> object:
            with lock:
                return _original(*args, **kwargs)  # type: ignore[operator]

        setattr(DynamoDBBackend, name, functools.wraps(original)(atomic))

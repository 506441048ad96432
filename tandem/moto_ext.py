"""Extensions and fixes to moto, pinned to the moto version we test against.

Each patch says what moto does, why it matters to us, and is applied once by :func:`apply`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from typing import Any

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
    _transactions_copy_only_their_items()
    _atomic_dynamodb_writes()  # after: it wraps the transaction as patched


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


def _transactions_copy_only_their_items() -> None:
    """moto's TransactWriteItems deep-copies every table it touches - once per action - so that it can roll a
    cancelled transaction back: one batch of ten status writes into a table of 10,000 items cost ~300 ms and
    grew with the table, where DynamoDB's cost does not. This is moto 5.2.5's function with one change: it
    keeps a copy of the items its actions touch (or that they were absent) and puts exactly those back. The
    validation, the conditions, the order of the writes and the cancellation reasons are moto's own."""
    import copy

    from moto.dynamodb.comparisons import get_filter_expression as filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType

    def snapshot(backend: DynamoDBBackend, items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
        saved = []
        for entry in items:
            _, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            key = op.get("Item") if "Item" in op else op.get("Key")
            if table is None or not isinstance(key, dict) or table.hash_key_attr not in key:
                continue  # moto reports the problem itself; nothing of it was written
            hash_key = DynamoType(key[table.hash_key_attr])
            range_attr = table.range_key_attr
            range_key = DynamoType(key[range_attr]) if range_attr is not None and range_attr in key else None
            if range_attr is not None and range_key is None:
                continue
            saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        return saved

    def restore(saved: list[tuple[Any, Any, Any, Any]]) -> None:
        for table, hash_key, range_key, before in reversed(saved):
            if range_key is None:
                if before is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = before
            elif before is None:
                table.items.get(hash_key, {}).pop(range_key, None)
            else:
                table.items[hash_key][range_key] = before

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        saved = snapshot(self, transact_items)
        target_items: set[tuple[str, str]] = set()
        errors: list[tuple[Any, Any, Any]] = []
        for item in transact_items:
            original_item: dict[str, Any] | None = None
            if len(list(item.keys())) > 1:
                raise TransactWriteSingleOpException
            try:
                op_type, op = next(iter(item.items()))
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")
                table_name = op["TableName"]
                condition = op.get("ConditionExpression")
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    table = self.get_table(table_name)
                    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = op["Item"][table.range_key_attr]
                else:
                    key = op["Key"]
                unique = (str(table_name), str(dict(sorted(key.items()))))
                if unique in target_items:
                    raise MultipleTransactionsException()
                target_items.add(unique)
                current = self.get_item(table_name, key)
                if condition is not None and not filter_expression(condition, names, values).expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
                if op_type == "Put":
                    self.put_item(table_name, op["Item"], condition_expression=condition,
                                  expression_attribute_names=names, expression_attribute_values=values)  # fmt: skip
                elif op_type == "Delete":
                    self.delete_item(table_name, key, condition_expression=condition,
                                     expression_attribute_names=names, expression_attribute_values=values)  # fmt: skip
                elif op_type == "Update":
                    self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                     condition_expression=condition, expression_attribute_names=names,
                                     expression_attribute_values=values)  # fmt: skip
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                restore(saved)
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), original_item))
            except Exception as e:  # moto's own: every other failure is a cancellation reason
                errors.append((type(e).__name__, str(e), original_item))
        if any(code is not None for code, _, _ in errors):
            restore(saved)
            raise TransactionCanceledException(errors)

    patched = functools.wraps(DynamoDBBackend.transact_write_items)(transact_write_items)
    DynamoDBBackend.transact_write_items = patched  # type: ignore[method-assign]

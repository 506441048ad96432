"""A small versioned-migration runner: ``NNNN_name.sql`` files applied in order, once, under a lock.

The same files run in unit/integration tests, the twin and Aurora. Each migration runs in its own
transaction together with its bookkeeping row; an applied file whose text changed is refused, because
silently diverging schemas between regions is exactly what a DR kit must not allow.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

MIGRATIONS_PACKAGE = "tandem_core.migrations"
_NAME = re.compile(r"([0-9]{4})_([a-z0-9_]+)\.sql")
_LOCK_KEY = 0x7A4D_0001  # pg_advisory_lock key shared by every runner of this schema


class SqlRunner(Protocol):
    def run(self, sql: str, **params: object) -> list[list[object]] | None: ...


class MigrationError(RuntimeError):
    pass


class SchemaBehind(RuntimeError):
    """The database lacks migrations this code needs. Schema changes run at deploy, never from a function."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str = MIGRATIONS_PACKAGE) -> list[Migration]:
    found = []
    for entry in resources.files(package).iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"migration file {entry.name!r} does not follow NNNN_name.sql")
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


def _applied(db: SqlRunner) -> dict[int, str]:
    rows = db.run("SELECT version, checksum FROM schema_migration") or []
    return {int(str(v)): str(c) for v, c in rows}


def pending(db: SqlRunner, migrations: list[Migration]) -> list[Migration]:
    """Migrations not applied yet; raises when an applied one was edited afterwards."""
    exists = db.run("SELECT to_regclass('schema_migration') IS NOT NULL")
    if not exists or not exists[0][0]:
        return list(migrations)
    applied = _applied(db)
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise MigrationError(f"migration {m.version:04d}_{m.name} changed after it was applied")
    return [m for m in migrations if m.version not in applied]


def migrate(db: SqlRunner, migrations: list[Migration] | None = None) -> list[int]:
    """Apply what is pending; returns the versions applied now. Safe to call from many processes."""
    todo_all = load_migrations() if migrations is None else migrations
    if not pending(db, todo_all):
        return []
    db.run("SELECT pg_advisory_lock(:key)", key=_LOCK_KEY)
    try:
        db.run(
            "CREATE TABLE IF NOT EXISTS schema_migration (version int PRIMARY KEY, name text NOT NULL,"
            " checksum char(64) NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = []
        for m in pending(db, todo_all):  # re-read under the lock: another runner may have finished
            db.run("BEGIN")
            try:
                db.run(m.sql)
                db.run(
                    "INSERT INTO schema_migration (version, name, checksum) VALUES (:v, :n, :c)",
                    v=m.version,
                    n=m.name,
                    c=m.checksum,
                )
                db.run("COMMIT")
            except Exception:
                db.run("ROLLBACK")
                raise
            done.append(m.version)
        return done
    finally:
        db.run("SELECT pg_advisory_unlock(:key)", key=_LOCK_KEY)


def require_current(db: SqlRunner, migrations: list[Migration] | None = None) -> None:
    """Refuse to work on a schema older than this code (or one whose applied migrations were edited): a function
    fails loudly rather than migrate - its role cannot, and a deploy's migration must not race live traffic."""
    missing = pending(db, load_migrations() if migrations is None else migrations)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise SchemaBehind(
            f"the ledger schema lacks {names}: schema changes run at deploy (the app stack's LedgerSchema step, as"
            " the schema owner), never from a function - deploy this code's stack, the writer region's first"
        )

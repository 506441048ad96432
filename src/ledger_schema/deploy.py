"""The schema step of a deploy: the ledger's migrations run once, as the schema owner, before new code runs.

CloudFormation runs it as a custom resource of the app stack (``LedgerSchema``), which the functions that use
the database depend on: a stack update applies the migrations first and only then publishes the code that
needs them, whoever deploys (``tandem deploy``, ``sam deploy``, a pipeline); a failed migration fails the
update and CloudFormation rolls the stack back to the code that ran before. Functions never migrate: their
roles cannot (migration 0003), and one that finds the schema behind fails loudly
(:func:`tandem_core.schema.require_current`).

Only the region that holds the writer changes the schema. A global secondary receives it by replication: its
step waits until every migration of this code has arrived (the writer region's stack is deployed first), and
fails the deploy rather than publish code that would find the schema behind.

Migrations are backward compatible (expand, then contract): the code running during the deploy - and the
other region's code until its own stack is updated - must keep working on the new schema.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tandem_core.aurora_observer import holds_writer
from tandem_core.database import LedgerConnector
from tandem_core.schema import SchemaBehind, load_migrations, migrate, pending

REPLICATION_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class SchemaReport:
    """What the step found and did: the cluster's role, the schema version now, the versions it applied."""

    role: str  # "writer" | "secondary"
    version: int
    applied: list[int] = field(default_factory=list)


def deploy_schema(
    reader: LedgerConnector,
    writer: LedgerConnector,
    region: str,
    *,
    wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SchemaReport:
    """Migrate through ``writer`` if this region's cluster holds the writer (asked through ``reader``, the
    endpoint that answers in both regions); else wait up to ``wait_seconds`` for the migrations to replicate."""
    migrations = load_migrations()
    latest = migrations[-1].version
    conn = reader.connection()
    if holds_writer(conn, region):
        return SchemaReport("writer", latest, migrate(writer.connection(), migrations))
    deadline = clock() + wait_seconds
    while missing := pending(conn, migrations):
        if clock() >= deadline:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
            raise SchemaBehind(
                f"{region} holds a global secondary and {names} has not replicated here within {wait_seconds:g} s:"
                " deploy the stack of the region that holds the writer first, then this one"
            )
        sleep(REPLICATION_POLL_SECONDS)
    return SchemaReport("secondary", latest)

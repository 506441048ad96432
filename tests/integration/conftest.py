"""Integration fixtures: one real PostgreSQL server per test session, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pg8000.native
import pytest

from tandem.localpg import LocalPostgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    with LocalPostgres(database="postgres_tests") as server:
        yield server


@pytest.fixture
def database(pg_server: LocalPostgres) -> Iterator[str]:
    """A new, empty database for one test."""
    name = f"t{next(_counter)}"
    admin = pg_server.connect("postgres")
    admin.run(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.run(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def db(pg_server: LocalPostgres, database: str) -> Iterator[pg8000.native.Connection]:
    conn = pg_server.connect(database)
    yield conn
    conn.close()

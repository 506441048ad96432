"""Integration fixtures: one real PostgreSQL server per test session, a fresh database per test, and a region's
emulator endpoint (moto server over HTTP, as the twin runs it) per test."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Iterator

import pg8000.native
import pytest

from tandem.localpg import LocalPostgres, free_port
from tandem.twin.regions import RegionEndpoint

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


@pytest.fixture
def region_endpoint() -> Iterator[RegionEndpoint]:
    """us-west-2's emulator endpoint on a port of its own, its state reset."""
    server = RegionEndpoint("us-west-2", free_port())
    server.start()
    try:
        urllib.request.urlopen(f"{server.url}/moto-api/reset", data=b"", timeout=10).close()
        yield server
    finally:
        server.stop()

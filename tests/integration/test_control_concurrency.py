"""The lock under real concurrency: 50 invocations racing for the control record over HTTP (moto server).

Each thread has its own client and connection, as 50 Lambda execution environments would; DynamoDB's
conditional write must let exactly one through. This is also a check on the emulator the twin rests on:
if its conditional writes were not atomic, the twin could show two executions where AWS shows one.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tandem.local import emulator_client, ledger_table_keys
from tandem.twin.regions import RegionEndpoint
from tandem_core.control import ControlStore, LockRefused, NewExecution

REGION, TABLE = "us-west-2", "tandem-ledger"
RACERS = 50


@pytest.fixture
def endpoint(region_endpoint: RegionEndpoint) -> str:
    emulator_client("dynamodb", REGION, region_endpoint.url).create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys()
    )
    return region_endpoint.url


def race(endpoint: str, new: list[NewExecution], now: float) -> list[str]:
    """Every racer's outcome: "acquired" or its refusal reason; all start at once."""
    start = threading.Barrier(len(new))

    def one(execution: NewExecution) -> str:
        from tandem.local import _session  # one session, one client per racer (own connection pool)

        db: Any = _session().client(
            "dynamodb", region_name=REGION, endpoint_url=endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        store = ControlStore(db, TABLE, initial_active_region="us-east-1")
        start.wait()
        try:
            store.acquire(execution, now, lease_seconds=120)
        except LockRefused as refused:
            return refused.reason
        return "acquired"

    with ThreadPoolExecutor(max_workers=len(new)) as pool:
        return list(pool.map(one, new))


def test_fifty_concurrent_invocations_make_exactly_one_execution(endpoint: str) -> None:
    outcomes = race(endpoint, [NewExecution(f"x{i}", "failover", "failover", REGION) for i in range(RACERS)], 1e9)
    assert outcomes.count("acquired") == 1, outcomes
    assert set(outcomes) <= {"acquired", "execution_running", "already_active"}
    record = ControlStore(emulator_client("dynamodb", REGION, endpoint), TABLE, "us-east-1").read()
    assert (record.active_region, record.epoch, record.state.value) == (REGION, 1, "running")
    assert outcomes[int(str(record.execution_id)[1:])] == "acquired"  # the record names the one that won

"""SnapStart as the twin runs it (issue 12 part 4): the hooks' order, a restore that is a fork, no connection
surviving it, and the processor restored from a snapshot committing a batch through its own connection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.lambda_runtime import function
from tandem.local import LocalRegion, local_region
from tandem.template import ROOT
from tandem.twin.worker import Worker
from tests.conftest import eventually, load_event

FN = "transaction_processor"

PROBE = """
import json, os, socket, sys
from snapshot_restore_py import register_after_restore, register_before_snapshot
from tandem import snapstart

ran, held, port = [], [], int(sys.argv[1])
register_before_snapshot(lambda: ran.append("before-1"))
register_before_snapshot(lambda: (ran.append("before-2"), held.append(socket.create_connection(("127.0.0.1", port)))))
register_after_restore(lambda: ran.append("after-1"))
register_after_restore(lambda tag: ran.append("after-2 " + tag), "x")
snapshot_pid = os.getpid()
snapstart.take_snapshot()
snapstart.restore(snapstart.exit_like)
try:
    held[0].sendall(b"still here")
    alive = True
except OSError:
    alive = False
print(json.dumps({"ran": ran, "restored_in_another_process": os.getpid() != snapshot_pid, "alive": alive}))
sys.exit(3)
"""


def test_a_restore_runs_the_hooks_in_lambdas_order_in_a_copy_whose_old_connections_are_gone() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, str(server.getsockname()[1])],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        server.settimeout(10)
        peer, _ = server.accept()
        with peer:
            peer.settimeout(10)
            assert peer.recv(100) == b""  # the restored copy cut the snapshot's connection: EOF, nothing sent
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err  # the snapshot process ends as its restored copy did
    assert json.loads(out) == {
        "ran": ["before-2", "before-1", "after-1", "after-2 x"],  # before: last registered first; after: in order
        "restored_in_another_process": True,
        "alive": False,
    }


COPY = """
import os, sys
from tandem import snapstart

snapstart.take_snapshot()
snapstart.restore(snapstart.exit_like)
print(os.getpid(), flush=True)
sys.stdin.read()  # serves until told otherwise
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def test_a_restored_copy_does_not_outlive_its_snapshot_process() -> None:
    """Killing the execution environment (the process the twin started) must end the copy that serves it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", COPY], env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        copy = int(proc.stdout.readline())
        assert copy != proc.pid
        assert not _gone(copy)
        proc.kill()
        proc.wait(timeout=10)
        assert eventually(lambda: _gone(copy), timeout=5)
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def region() -> Iterator[LocalRegion]:
    with local_region() as local:
        yield local


def _batch() -> dict[str, Any]:
    event = load_event("sqs_valid_batch.json")
    for record in event["Records"]:
        body = json.loads(record["body"])
        record["body"] = json.dumps(body | {"transaction_id": str(uuid.uuid4())})
        record["messageId"] = str(uuid.uuid4())
    return event


def test_the_processor_restored_from_a_snapshot_commits_through_a_connection_of_its_own(
    region: LocalRegion, tmp_path: Path
) -> None:
    env = {**region.function_env(FN), "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
    log = tmp_path / "processor.log"
    worker = Worker(function(FN), region.region, env, log)
    try:
        events = [_batch(), _batch()]
        for event in events:
            reply = worker.invoke(event)
            assert reply == {"ok": True, "response": {"batchItemFailures": []}}, reply
    finally:
        worker.stop()
    ids = [json.loads(r["body"])["transaction_id"] for e in events for r in e["Records"]]
    conn = region.postgres.connect()
    try:
        committed = conn.run(
            "SELECT count(*) FROM ledger_transaction WHERE transaction_id = ANY(CAST(:i AS uuid[]))", i=ids
        )
    finally:
        conn.close()
    assert committed == [[len(ids)]]
    text = log.read_text(encoding="utf-8")
    assert text.index("snapshot: processor built, nothing connected") < text.index("restored: randomness reseeded")


def test_before_the_snapshot_nothing_is_connected_and_after_a_restore_the_connection_is_on_its_way(
    region: LocalRegion, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in region.function_env(FN).items():
        monkeypatch.setenv(key, value)
    from transaction_processor import app

    monkeypatch.setattr(app, "_environment", app._Environment())
    app._before_snapshot()
    ledger = app._environment.ledger
    assert ledger is not None
    connector = ledger._connector
    assert (connector._connection, connector._opening) == (None, None)  # no socket, no thread in the snapshot
    processor = app._environment.processor
    app._after_restore()
    assert app._environment.processor is processor  # the snapshot's clients, reused
    assert connector._opening is not None or connector._connection is not None
    assert connector.connection().run("SELECT 1") == [[1]]
    connector.discard()

"""`tandem invoke` (behind `make invoke`): any event file in, the handler's JSON response as the last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.twin import launcher
from tests.conftest import ROOT, event_files


@pytest.fixture(scope="module", autouse=True)
def _private_twin() -> Iterator[Path]:
    """Never touch a twin the developer may have running: these calls share one of their own."""
    with tempfile.TemporaryDirectory(prefix="tandem-invoke-test-") as d:
        os.environ["TANDEM_TWIN_DIR"] = d
        launcher.start(Path(d))
        try:
            yield Path(d)
        finally:
            launcher.stop(Path(d))
            del os.environ["TANDEM_TWIN_DIR"]


def test_without_a_running_twin_invoke_starts_one_and_stops_it(tmp_path: Path) -> None:
    own = tmp_path / "twin"
    env_before = os.environ["TANDEM_TWIN_DIR"]
    os.environ["TANDEM_TWIN_DIR"] = str(own)
    try:
        proc = tandem("invoke", "transaction_processor", str(ROOT / "events" / "sqs_valid_batch.json"))
    finally:
        os.environ["TANDEM_TWIN_DIR"] = env_before
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"batchItemFailures": []}
    assert not launcher.is_running(own)
    assert not (own / "twin.json").exists()


def tandem(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    for key in [k for k in env if k.startswith(("AWS_", "LEDGER_", "POWERTOOLS_", "LAMBDA_"))]:
        del env[key]
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("event", [e for e in event_files() if e.name.startswith("sqs_")], ids=lambda p: p.name)
def test_every_sample_sqs_event_gets_a_response(event: Path) -> None:
    proc = tandem("invoke", "transaction_processor", str(event))
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout.strip().splitlines()[-1])
    records = json.loads(event.read_text())["Records"]
    assert set(response) == {"batchItemFailures"}
    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} <= {r["messageId"] for r in records}


def test_the_health_event_gets_200_in_both_regions() -> None:
    for region in ("us-east-1", "us-west-2"):
        proc = tandem("invoke", "region_health", str(ROOT / "events" / "http_health.json"), "--region", region)
        assert proc.returncode == 0, proc.stderr
        response = json.loads(proc.stdout.strip().splitlines()[-1])
        assert response["statusCode"] == 200
        assert json.loads(response["body"])["region"] == region


def test_every_event_file_is_used_by_a_test() -> None:
    assert {e.name for e in event_files()} == {
        "sqs_valid_batch.json", "sqs_invalid_records.json", "sqs_duplicates_and_conflict.json", "http_health.json",
        "monitor_scheduled.json",  # tests/unit/test_monitor_handler.py, tests/integration/test_replication_monitor.py
        "failover_alarm.json", "failover_plan.json", "failover_failover.json", "failover_failover_forced.json",
        "failover_switchover.json", "failover_failback.json", "failover_status.json",  # tests/unit/test_failover_*
    }  # fmt: skip


def test_an_event_of_another_shape_gets_lambdas_error_response(tmp_path: Path) -> None:
    event = tmp_path / "apigw.json"
    event.write_text(json.dumps({"httpMethod": "GET", "path": "/"}))
    proc = tandem("invoke", "transaction_processor", str(event))
    assert proc.returncode == 1
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "errorMessage": "not an SQS event: 'Records' must be a list",
        "errorType": "ValueError",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["invoke", "transaction_processor", "/no/such/file.json"], "cannot read event file"),
        (["invoke", "nope", "events/sqs_valid_batch.json"], "invalid choice"),
        (["drill", "--transactions", "-1"], "must be >= 0"),
        (["drill", "--transactions", "0", "--duplicates", "3"], "nothing to redeliver"),
    ],
)
def test_bad_arguments_get_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    proc = tandem(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = tandem("invoke", "transaction_processor", str(bad))
    assert proc.returncode == 2
    assert "must hold a JSON object" in proc.stderr

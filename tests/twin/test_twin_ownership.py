"""The tools harm nothing they did not start, and leave nothing behind whatever ends them.

Each test drives the CLI as a user would (its own state directory, signals sent as a terminal or a
supervisor would) and then looks at the machine: the twin lock, this state directory's PostgreSQL trees and
every process that carries the state directory in its environment (daemon, workers, PostgreSQL servers).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tandem.drill import DRILL_SCALE
from tandem.twin import launcher
from tandem.twin.control import TwinNotRunning, call
from tandem.twin.ownership import DRILL_LOCK, TWIN_LOCK, FileLock, is_our_daemon, postgres_prefix
from tests.conftest import ROOT
from tests.twin.conftest import pg

PRIMARY = "us-east-1"

#: these tests are about who owns the twin, not about a scenario: the one-region drill, quick at x600
STEADY_DRILL = ("drill", "--scenario", "steady")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tandem-own-test-") as d:
        yield Path(d)
        with contextlib.suppress(TwinNotRunning, RuntimeError):
            launcher.stop(Path(d))  # whatever a failed test left


def _spawn(state_dir: Path, *args: str) -> subprocess.Popen[str]:
    """`tandem …` as a terminal starts it: SIGINT delivered (not ignored as in a background job)."""
    env = {**os.environ, "TANDEM_TWIN_DIR": str(state_dir), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen(
        [sys.executable, "-m", "tandem.cli", *args], env=env, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _run(state_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = _spawn(state_dir, *args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _postgres_trees(state_dir: Path) -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob(postgres_prefix(state_dir) + "*"))


def _processes_of(state_dir: Path) -> list[int]:
    """Every live process started for this state directory (they inherit TANDEM_TWIN_DIR from the CLI)."""
    marker = f"TANDEM_TWIN_DIR={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie holds nothing
                    found.append(int(entry.name))
    return found


def assert_nothing_left(state_dir: Path) -> None:
    """No twin process, no PostgreSQL tree, no state file, the lock free (workers get a moment to see EOF)."""
    _wait_for(lambda: not _processes_of(state_dir), timeout=20, what=f"processes {_processes_of(state_dir)}")
    assert _postgres_trees(state_dir) == []
    assert not (state_dir / "twin.json").exists()
    assert not FileLock(state_dir / TWIN_LOCK).is_held_elsewhere()


def _daemon_pid(state_dir: Path) -> int:
    pid = _wait_for(lambda: FileLock(state_dir / TWIN_LOCK).holder(), what="the daemon's pid")
    assert isinstance(pid, int)
    return pid


def _starting(state_dir: Path) -> bool:
    """Start-up is midway: PostgreSQL is up, the twin is not ready yet."""
    return any((tree / PRIMARY / "data" / "postmaster.pid").exists() for tree in _postgres_trees(state_dir))


def test_cli_without_a_twin_says_so_and_down_leaves_nothing_behind(state_dir: Path) -> None:
    for args in (["status", "--json"], ["outage", PRIMARY], ["down"]):
        proc = _run(state_dir, "twin", *args)
        assert proc.returncode == 2
        assert "the twin is not running" in proc.stderr
        assert "Traceback" not in proc.stderr
    up = _run(state_dir, "twin", "up", "--detach")
    assert up.returncode == 0, up.stderr
    status = json.loads(_run(state_dir, "twin", "status", "--json").stdout)
    pg_dir = Path(json.loads((state_dir / "twin.json").read_text())["postgres_dir"])
    assert pg_dir.exists()
    bad = _run(state_dir, "twin", "outage", "mars-north-1")
    assert bad.returncode == 2
    assert "unknown region" in bad.stderr
    assert _run(state_dir, "twin", "down").returncode == 0
    assert not pg_dir.exists()
    assert not (state_dir / "twin.json").exists()
    assert not launcher.is_running(state_dir)
    for info in status["regions"].values():
        port = int(info["endpoint"].rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1)


def test_stale_state_after_a_crash_never_signals_a_process_that_is_not_the_twin(state_dir: Path) -> None:
    """Finding 2: a stale pid (after a reboot it can be anything) is never killed; the debris goes."""
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        (state_dir / TWIN_LOCK).write_text(f"{bystander.pid}\n")
        (state_dir / "twin.json").write_text(json.dumps({"pid": bystander.pid, "control_port": 9}))
        debris = Path(tempfile.mkdtemp(prefix=postgres_prefix(state_dir)))
        (debris / PRIMARY).mkdir()
        assert not is_our_daemon(bystander.pid, state_dir)

        down = _run(state_dir, "twin", "down")
        assert down.returncode == 2
        assert "cleaned up after one that died" in down.stderr
        assert not debris.exists()
        assert not (state_dir / "twin.json").exists()

        (state_dir / "twin.json").write_text(json.dumps({"pid": bystander.pid, "control_port": 9}))
        up = _run(state_dir, "twin", "up", "--detach")
        assert up.returncode == 0, up.stderr
        assert bystander.poll() is None  # still alive after down and up
        assert _run(state_dir, "twin", "down").returncode == 0
        assert_nothing_left(state_dir)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_ctrl_c_during_start_up_leaves_no_process_and_no_directory(state_dir: Path) -> None:
    """Finding 5: Ctrl-C while `twin up` is still starting stops the half-started twin."""
    proc = _spawn(state_dir, "twin", "up", "--detach")
    _wait_for(lambda: _starting(state_dir), what="start-up to be midway")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "tandem: interrupted"
    assert_nothing_left(state_dir)


def test_kill_9_of_the_daemon_during_start_up_is_cleaned_up_at_once(state_dir: Path) -> None:
    """Finding 5: the daemon dies mid start-up; `up` says so in one line and removes what it had created."""
    proc = _spawn(state_dir, "twin", "up", "--detach")
    pid = _daemon_pid(state_dir)
    _wait_for(lambda: _starting(state_dir), what="start-up to be midway")
    assert is_our_daemon(pid, state_dir)
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "the twin failed to start (exit -9)" in err
    assert len(err.strip().splitlines()) == 1
    assert_nothing_left(state_dir)


def test_kill_9_of_a_running_daemon_is_cleaned_up_by_the_next_down(state_dir: Path) -> None:
    assert _run(state_dir, "twin", "up", "--detach").returncode == 0
    os.kill(_daemon_pid(state_dir), signal.SIGKILL)
    _wait_for(lambda: not FileLock(state_dir / TWIN_LOCK).is_held_elsewhere(), what="the lock to be released")
    assert _postgres_trees(state_dir)  # the servers outlived their daemon...
    down = _run(state_dir, "twin", "down")
    assert down.returncode == 2
    assert "cleaned up after one that died" in down.stderr
    assert_nothing_left(state_dir)  # ...and `down` stopped them


def test_two_ups_at_once_start_one_twin_and_the_other_refuses_in_one_line(state_dir: Path) -> None:
    """Finding 4 (the orphan daemon): the state directory is locked, so a second start never happens."""
    first, second = _spawn(state_dir, "twin", "up", "--detach"), _spawn(state_dir, "twin", "up", "--detach")
    results = sorted([(p.wait(timeout=120), p.communicate()[1]) for p in (first, second)])
    assert [code for code, _ in results] == [0, 2]
    assert "a twin is already" in results[1][1]
    assert len(results[1][1].strip().splitlines()) == 1
    assert len(_postgres_trees(state_dir)) == 1
    assert _run(state_dir, "twin", "down").returncode == 0
    assert_nothing_left(state_dir)


def test_sigterm_of_a_drill_stops_the_twin_it_started(state_dir: Path) -> None:
    """Finding 5: a supervisor's SIGTERM ends the drill like Ctrl-C, and the drill's twin goes with it."""
    proc = _spawn(state_dir, *STEADY_DRILL, "--transactions", "3000", "--poison", "0", "--duplicates", "0",
                  "--report", str(state_dir / "r.json"))  # fmt: skip
    _wait_for(lambda: (state_dir / "twin.json").exists(), what="the drill's twin")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "tandem: interrupted" in err
    assert_nothing_left(state_dir)


def test_a_second_drill_at_once_refuses_in_one_line_and_the_first_passes(state_dir: Path, tmp_path: Path) -> None:
    """Finding 4: two drills in one checkout would take each other's poison; the second refuses at once."""
    first = _spawn(state_dir, *STEADY_DRILL, "--transactions", "60", "--poison", "3", "--duplicates", "5",
                   "--report", str(tmp_path / "first.json"))  # fmt: skip
    _wait_for(lambda: FileLock(state_dir / DRILL_LOCK).is_held_elsewhere(), what="the first drill")
    second = _run(state_dir, *STEADY_DRILL, "--transactions", "10", "--report", str(tmp_path / "second.json"))
    assert second.returncode == 2
    assert f"another drill (pid {first.pid}) is running" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "second.json").exists()
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, out + err
    assert "PASSED" in out
    assert_nothing_left(state_dir)


def _committed(status: dict[str, Any], region: str) -> int:
    """Transactions in ``region``'s ledger (0 before the processor created the table)."""
    try:
        db = pg(status, region)
    except Exception:
        return 0
    try:
        return int(db.run("SELECT count(*) FROM ledger_transaction")[0][0])
    except Exception:
        return 0
    finally:
        db.close()


def test_an_outage_during_a_drill_exits_2_with_one_line_and_a_partial_report(state_dir: Path) -> None:
    """Finding 3: a crash of the drill's world is not a failed audit (exit 1); CI can tell them apart."""
    status = launcher.start(state_dir, scale=DRILL_SCALE)
    try:
        report = state_dir / "outage.json"
        # far more than the twin commits before the outage below (a batch costs 3 calls: ~1,000 a second here)
        proc = _spawn(state_dir, *STEADY_DRILL, "--transactions", "30000", "--poison", "2", "--duplicates", "0",
                      "--report", str(report))  # fmt: skip
        _wait_for(lambda: FileLock(state_dir / DRILL_LOCK).is_held_elsewhere(), what="the drill")
        # the workload is flowing: the primary's ledger commits (a fixed wait once hit the drill's clock check)
        _wait_for(lambda: _committed(status, PRIMARY) > 0, what="the drill's first commit")
        call(state_dir, "POST", f"/outage/{PRIMARY}")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert "the drill could not run (sending the workload)" in err
        assert f"partial report: {report}" in err
        partial = json.loads(report.read_text())
        assert partial["completed"] is False
        assert partial["passed"] is False
        assert partial["error"]["stage"] == "sending the workload"
        assert partial["workload"]["sent"] == 30002
    finally:
        launcher.stop(state_dir)
    assert_nothing_left(state_dir)


def test_a_drill_on_a_real_time_twin_refuses_instead_of_waiting_for_retries(state_dir: Path) -> None:
    """Finding 6: at x1 one poison message needs 5 x 190 s; the drill says so at once, with the way out."""
    launcher.start(state_dir, scale=1.0)
    try:
        started = time.monotonic()
        proc = _run(state_dir, *STEADY_DRILL, "--transactions", "5", "--poison", "1", "--duplicates", "0",
                    "--report", str(state_dir / "x1.json"))  # fmt: skip
        assert time.monotonic() - started < 60
        assert proc.returncode == 2
        assert "clock is x1: a poison message needs 950 s to reach the DLQ" in proc.stderr
        assert "tandem twin up --scale 600" in proc.stderr
        assert launcher.is_running(state_dir)  # a twin the drill did not start is left alone
    finally:
        launcher.stop(state_dir)


def test_overlapping_invokes_share_one_twin_and_the_last_one_out_stops_it(state_dir: Path) -> None:
    """One invoke starts the twin, the other waits for it instead of starting a second; neither stops it under
    the other, and once both are done nothing is left."""
    event = str(ROOT / "events" / "sqs_valid_batch.json")
    calls = [_spawn(state_dir, "invoke", "transaction_processor", event) for _ in range(2)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in calls]
    for code, out, err in results:
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"batchItemFailures": []}
    assert_nothing_left(state_dir)

"""`make build` ships bytecode: scripts/bytecode.py compiles every function of a `sam build` output and then
refuses an artifact in which any module lacks a .pyc that Python 3.12 would use as is (Lambda's /var/task is
read-only: a missing or stale-looking .pyc means compiling that module on every cold start)."""

from __future__ import annotations

import py_compile
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "bytecode.py"


def _artifact(tmp_path: Path) -> Path:
    """Two functions as `sam build` lays them out: the code and its dependencies side by side."""
    build = tmp_path / "build"
    for function in ("TransactionProcessorFunction", "FailoverHandlerFunction"):
        for module in ("transaction_processor/__init__.py", "transaction_processor/app.py", "six.py"):
            path = build / function / module
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("def handler(event, context):\n    raise ValueError('boom')\n", encoding="utf-8")
    (build / "template.yaml").write_text("Resources: {}\n", encoding="utf-8")
    return build


def _run(action: str, build: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), action, str(build)], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_module_of_every_function_ships_unchecked_bytecode_with_lambda_paths(tmp_path: Path) -> None:
    build = _artifact(tmp_path)
    assert _run("check", build).returncode == 1  # nothing compiled yet
    assert _run("compile", build).returncode == 0
    checked = _run("check", build)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines() == [
        "FailoverHandlerFunction: 3 of 3 modules ship bytecode",
        "TransactionProcessorFunction: 3 of 3 modules ship bytecode",
    ]
    pyc = build / "TransactionProcessorFunction" / "transaction_processor" / "__pycache__" / "app.cpython-312.pyc"
    assert b"/var/task/transaction_processor/app.py" in pyc.read_bytes()  # tracebacks name the deployed path


def test_a_missing_or_timestamp_checked_pyc_fails_the_check_and_names_the_module(tmp_path: Path) -> None:
    build = _artifact(tmp_path)
    assert _run("compile", build).returncode == 0
    function = build / "FailoverHandlerFunction"
    (function / "__pycache__" / "six.cpython-312.pyc").unlink()
    app = function / "transaction_processor" / "app.py"
    py_compile.compile(str(app), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    checked = _run("check", build)
    assert checked.returncode == 1
    assert "FailoverHandlerFunction: 1 of 3 modules ship bytecode" in checked.stdout
    assert "six.py: no six.cpython-312.pyc" in checked.stderr
    assert "transaction_processor/app.py: app.cpython-312.pyc is checked against its source (flags 0)" in checked.stderr


def test_wrong_usage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    refused = _run("publish", tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "usage: python3.12 scripts/bytecode.py compile|check BUILD_DIR"

"""The cold-start bench's copy of the built artifact: foreign native code swapped for this machine's, pins kept."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import typing_extensions

from bench.artifact import _native_packages, _swap
from bench.spawn import BenchError

HERE = importlib.metadata.version("pydantic_core")


def fake_artifact(root: Path, version: str) -> Path:
    """An artifact as `sam build` leaves it for arm64: pydantic_core with an aarch64 extension, and its pin."""
    package = root / "pydantic_core"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('arm64 build')\n", encoding="utf-8")
    (package / "_pydantic_core.cpython-312-aarch64-linux-gnu.so").write_bytes(b"\x7fELF not for this machine")
    (root / f"pydantic_core-{version}.dist-info").mkdir()
    (root / "plain.py").write_text("VALUE = 1\n", encoding="utf-8")
    return root


def test_a_package_built_for_another_machine_is_swapped_for_this_ones_same_version(tmp_path: Path) -> None:
    root = fake_artifact(tmp_path / "artifact", HERE)
    assert _native_packages(root) == ["pydantic_core"]
    _swap(root, "pydantic_core")
    assert _native_packages(root) == []
    assert list((root / "pydantic_core" / "__pycache__").glob("*.pyc"))  # compiled, as the artifact is
    probe = "import pydantic_core, plain; print(pydantic_core.__file__, plain.VALUE)"
    deps = Path(typing_extensions.__file__).parent  # what the real artifact ships beside it
    out = subprocess.run([sys.executable, "-S", "-c", probe], env={"PYTHONPATH": f"{root}:{deps}"}, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.split() == [str(root / "pydantic_core" / "__init__.py"), "1"]


def test_a_different_pinned_version_is_refused_rather_than_measured(tmp_path: Path) -> None:
    root = fake_artifact(tmp_path / "artifact", "0.0.1")
    with pytest.raises(BenchError, match=r"ships pydantic_core 0\.0\.1, this environment has"):
        _swap(root, "pydantic_core")


def test_calls_per_batch_is_the_median_batch_and_the_breakdown_the_mean_per_kind() -> None:
    from bench.pipeline import HandlerThroughput

    three = {"s3:PutObject": 1, "postgresql:statement": 1, "dynamodb:TransactWriteItems": 1}
    calls = [three] * 3 + [{**three, "dynamodb:GetItem": 1}]  # one batch refreshed the fence
    run = HandlerThroughput(4, 1.0, [1.0] * 4, 1.0, 0.1, 0.1, 40, calls=calls)
    assert run.calls_per_batch == 3
    assert run.call_breakdown["dynamodb:GetItem"] == 0.25
    assert run.call_breakdown["s3:PutObject"] == 1.0

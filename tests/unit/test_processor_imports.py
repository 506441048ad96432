"""What the handlers' cold starts load and leave behind (each check a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tandem.template import ROOT

HEAVY = (
    "aws_xray_sdk.core", "aws_lambda_powertools.utilities.batch", "aws_lambda_powertools.utilities.data_classes",
    "boto3", "s3transfer",
)  # fmt: skip


HANDLERS = ("transaction_processor.app", "replication_monitor.app", "failover_handler.app")


def loaded_after_import(trace_disabled: str, module: str = "transaction_processor.app") -> dict[str, bool]:
    code = (
        f"import json, sys; import {module} as app; "
        f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}} | {{'tracer': app.tracer is not None}}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "POWERTOOLS_TRACE_DISABLED": trace_disabled}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    loaded: dict[str, bool] = json.loads(out.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(("disabled", "traced"), [("true", False), ("false", True)])
def test_the_xray_sdk_is_loaded_only_when_tracing_is_on_and_boto3_and_the_batch_utility_never(
    disabled: str, traced: bool
) -> None:
    loaded = loaded_after_import(disabled)
    assert loaded["tracer"] is traced
    assert loaded["aws_xray_sdk.core"] is traced
    assert not loaded["aws_lambda_powertools.utilities.batch"]
    assert not loaded["aws_lambda_powertools.utilities.data_classes"]
    assert not loaded["boto3"]  # clients come from botocore: no s3transfer, no multiprocessing
    assert not loaded["s3transfer"]


@pytest.mark.parametrize("module", HANDLERS[1:])
@pytest.mark.parametrize(("disabled", "traced"), [("true", False), ("false", True)])
def test_every_handler_loads_the_xray_sdk_only_when_tracing_is_on(module: str, disabled: str, traced: bool) -> None:
    loaded = loaded_after_import(disabled, module)
    assert loaded["tracer"] is traced
    assert loaded["aws_xray_sdk.core"] is traced


@pytest.mark.parametrize("module", HANDLERS)
def test_init_freezes_what_it_imported_and_leaves_the_collector_on(module: str) -> None:
    """A handler module turns the cyclic collector off for its imports, then freezes them and turns it on."""
    code = "\n".join(
        [
            "import gc, json",
            "before = gc.get_freeze_count()",
            f"import {module} as app",
            "frozen = gc.get_freeze_count()",
            "from tandem_core import coldstart",
            "with coldstart.lasting():",
            "    built = [[i] for i in range(1000)]",
            "    inside = gc.isenabled()",
            "print(json.dumps([before, frozen, gc.isenabled(), inside, gc.get_freeze_count() - frozen]))",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "POWERTOOLS_TRACE_DISABLED": "true"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    before, frozen, enabled, inside, added = json.loads(out.strip().splitlines()[-1])
    assert frozen - before > 50_000  # botocore, pydantic, Powertools, ours: out of every later collection
    assert enabled  # on again after init
    assert not inside  # off while building what lasts
    assert added >= 1000  # what was built is frozen too

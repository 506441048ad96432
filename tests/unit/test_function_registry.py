"""One function registry, read from template.yaml: the twin, `tandem invoke`, the tests and the bench use it."""

from __future__ import annotations

import importlib.util

import pytest

from tandem.lambda_runtime import function, functions, functions_of, lambda_environment, snake_name, snap_start
from tandem.template import APP_TEMPLATE, Template, load, loads, samconfig_parameters


def test_every_serverless_function_of_the_template_is_registered_with_its_handler() -> None:
    declared = {k: r["Properties"]["Handler"] for k, r in load(APP_TEMPLATE)["Resources"].items()
                if r["Type"] == "AWS::Serverless::Function"}  # fmt: skip
    registry = functions()
    assert {spec.logical_id: spec.handler for spec in registry.values()} == declared
    assert {"transaction_processor", "region_health"} <= set(registry)
    for spec in registry.values():
        assert importlib.util.find_spec(spec.module) is not None, spec.handler  # the code SAM would package


@pytest.mark.parametrize(
    ("logical_id", "name"),
    [("TransactionProcessorFunction", "transaction_processor"), ("ReplicationMonitorAuroraFunction",
     "replication_monitor_aurora"), ("Function", "function"), ("HealthFn", "health_fn")],
)  # fmt: skip
def test_a_function_is_named_after_its_logical_id(logical_id: str, name: str) -> None:
    assert snake_name(logical_id) == name


def test_an_unknown_function_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown function .nope.; template\.yaml has"):
        function("nope")


def test_the_environment_is_the_templates_plus_what_the_lambda_runtime_sets() -> None:
    config = samconfig_parameters("dr")
    tpl = Template.from_file(
        parameters={**config.parameters, "PeerRegion": "us-east-1"}, region="us-west-2", stack_name=config.stack_name,
        ssm=lambda name: f"value-of-{name.rsplit('/', 1)[-1]}",
    )  # fmt: skip
    tpl.physical.update({k: {"Ref": k, "Arn": f"arn:aws:x:us-west-2:123456789012:{k}"} for k in tpl.doc["Resources"]})
    env = lambda_environment(tpl, function("transaction_processor"), "http://127.0.0.1:4566")
    assert env["LEDGER_TABLE_NAME"] == "value-of-ledger-table-name"  # the SSM parameter the global stack publishes
    assert env["TANDEM_REGION_ROLE"] == "dr"  # from Globals
    assert (env["AWS_REGION"], env["AWS_ENDPOINT_URL"]) == ("us-west-2", "http://127.0.0.1:4566")
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "tandem-app-dr-transaction-processor"


SNAP_TEMPLATE = """
Parameters:
  SnapStart: {Type: String, Default: PublishedVersions}
Globals:
  Function:
    SnapStart: {ApplyOn: !Ref SnapStart}
Resources:
  WithAliasFunction:
    Type: AWS::Serverless::Function
    Properties: {Handler: a.app.handler, AutoPublishAlias: live}
  WithoutAliasFunction:
    Type: AWS::Serverless::Function
    Properties: {Handler: b.app.handler}
"""


@pytest.mark.parametrize(
    ("apply_on", "logical_id", "expected"),
    [("PublishedVersions", "WithAliasFunction", True), ("None", "WithAliasFunction", False),
     ("PublishedVersions", "WithoutAliasFunction", False)],
)  # fmt: skip
def test_snapstart_applies_to_a_published_version_when_the_template_asks_for_it(
    apply_on: str, logical_id: str, expected: bool
) -> None:
    tpl = Template(loads(SNAP_TEMPLATE), parameters={"SnapStart": apply_on})
    spec = next(s for s in functions_of(tpl.doc).values() if s.logical_id == logical_id)
    assert snap_start(tpl, spec) is expected
    env = lambda_environment(tpl, spec, "http://127.0.0.1:4566")
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == ("snap-start" if expected else "on-demand")


def test_the_templates_functions_start_on_demand() -> None:
    """SnapStart needs the SQS mapping on a published version (an alias): not switched on in template.yaml yet."""
    tpl = Template.from_file(parameters=samconfig_parameters("default").parameters)
    assert not any(snap_start(tpl, spec) for spec in functions().values())

"""`tandem status` against both regions built in moto (in-process): what it shows, and what it shows when a
region does not answer. Readiness records are written with the monitor's own record builder."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from moto import mock_aws

from replication_monitor.monitor import iso
from tandem import status
from tandem.cli import main
from tandem.local import ledger_table_keys
from tandem.template import samconfig_parameters
from tandem_core.heartbeat import to_attributes
from tandem_core.readiness import OK, Dependency, Thresholds, assess, readiness_key, readiness_record
from tandem_core.replication import HeartbeatState, Store, StoreReading

PRIMARY, DR = "us-east-1", "us-west-2"
ENVS = {PRIMARY: ("primary", "global-primary"), DR: ("dr", "global-secondary")}
TABLE, GLOBAL = "tandem-ledger", "tandem-ledger"
NOW = 1_800_000_000.0


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


def _stack(cf: Any, name: str, outputs: dict[str, str]) -> None:
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    cf.create_stack(StackName=name, TemplateBody=json.dumps(template))


class Regions:
    """Both regions as samconfig.toml deploys them: stacks (outputs only), table, queue + processor mapping,
    the Aurora global cluster with a writer in the primary and a secondary in DR."""

    def __init__(self) -> None:
        self.mappings: dict[str, str] = {}
        self.functions: dict[str, str] = {}
        rds = {r: boto3.client("rds", region_name=r) for r in ENVS}
        rds[PRIMARY].create_global_cluster(GlobalClusterIdentifier=GLOBAL, Engine="aurora-postgresql")
        for region, (app_env, global_env) in ENVS.items():
            app = samconfig_parameters(app_env)
            function = f"{app.stack_name}-transaction-processor"
            self.functions[region] = function
            rds[region].create_db_cluster(
                DBClusterIdentifier=f"{GLOBAL}-{app_env}",
                Engine="aurora-postgresql",
                GlobalClusterIdentifier=GLOBAL,
                **({"MasterUsername": "tandem", "MasterUserPassword": "secret123"} if region == PRIMARY else {}),
            )
            self.client(region, "dynamodb").create_table(
                TableName=TABLE, BillingMode="PAY_PER_REQUEST", **ledger_table_keys()
            )
            sqs = self.client(region, "sqs")
            url = sqs.create_queue(QueueName=f"{app.stack_name}-TransactionQueue")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            role = self.client(region, "iam").create_role(
                RoleName=f"processor-{region}", AssumeRolePolicyDocument="{}"
            )["Role"]["Arn"]
            lam = self.client(region, "lambda")
            lam.create_function(
                FunctionName=function, Runtime="python3.12", Role=role, Handler="handler.handler",
                Code={"ZipFile": _zip()},
            )  # fmt: skip
            self.mappings[region] = lam.create_event_source_mapping(
                EventSourceArn=queue_arn, FunctionName=function, Enabled=region == PRIMARY
            )["UUID"]
            cf = self.client(region, "cloudformation")
            _stack(cf, app.stack_name, {"TransactionProcessorFunctionName": function})
            glob = {"LedgerTableName": TABLE}
            if region == PRIMARY:
                glob["GlobalClusterIdentifier"] = GLOBAL
            _stack(cf, samconfig_parameters(global_env).stack_name, glob)

    @staticmethod
    def client(region: str, service: str) -> Any:
        return boto3.client(service, region_name=region)

    def write_readiness(
        self, region: str, *, dependencies: dict[Dependency, str] | None = None, lags: dict[Store, float | None],
        peer_healthy: bool | None = True, peer_heartbeat_age: float | None = 4.2, measured_at: float = NOW - 30,
        last_known: dict[Store, float] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A readiness record built and stored the way the monitor does (readiness_record + to_attributes)."""
        deps = dependencies or dict.fromkeys(Dependency, OK)
        stores = {
            s: StoreReading(
                s, lag, "test", measured_at, HeartbeatState.FRESH, 3.0,
                last_known_lag_seconds=(last_known or {}).get(s),
            )
            for s, lag in lags.items()
        }  # fmt: skip
        thresholds = Thresholds()
        peer = {
            "region": DR if region == PRIMARY else PRIMARY,
            "probed": peer_healthy is not None,
            "healthy": peer_healthy,
            "answered": peer_healthy,
            "probes_healthy": 6 if peer_healthy else 0,
            "probes_failed": 0 if peer_healthy else 6,
            "heartbeat_age_seconds": peer_heartbeat_age,
        }
        record = readiness_record(
            region=region, role=ENVS[region][0], assessment=assess(deps, stores, peer_healthy, thresholds),
            stores=stores, dependencies=deps, aurora_writer=region == PRIMARY, peer=peer, measured_at=measured_at,
            measured_at_iso=iso(measured_at), thresholds=thresholds,
        )  # fmt: skip
        item = {**readiness_key(region), **to_attributes(record)}
        self.client(region, "dynamodb").put_item(TableName=TABLE, Item=item)
        return record


@pytest.fixture
def regions(aws_env: None) -> Iterator[Regions]:
    with mock_aws():
        yield Regions()


class Failing:
    """A ClientSource whose ``down`` region fails every call with ``error``; other regions are moto's."""

    def __init__(self, down: str, error: Exception) -> None:
        self.down = down
        self.error = error
        self.real = status.AwsClients()

    def client(self, region: str, service: str) -> Any:
        if region != self.down:
            return self.real.client(region, service)
        error = self.error

        class Dead:
            def __getattr__(self, _name: str) -> Any:
                def call(**_params: Any) -> Any:
                    raise error

                return call

        return Dead()


def view(source: status.ClientSource | None = None) -> dict[str, Any]:
    return status.collect(source or status.AwsClients(), status.aws_targets(), "aws", clock=lambda: NOW)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------- the view
def test_both_regions_as_the_monitor_recorded_them(regions: Regions, capsys: pytest.CaptureFixture[str]) -> None:
    regions.write_readiness(PRIMARY, lags={Store.AURORA: 0.0, Store.DYNAMODB: 0.4, Store.S3: 1.1})
    regions.write_readiness(
        DR, lags={Store.AURORA: 0.25, Store.DYNAMODB: 2.5, Store.S3: None}, peer_healthy=True,
        peer_heartbeat_age=7.5, last_known={Store.S3: 3.0},
    )  # fmt: skip

    code, out, err = run_cli(capsys, "status", "--json", "--target", "aws")

    assert code == 0, err
    shown = json.loads(out)  # exactly one object
    assert shown["target"] == "aws"
    assert shown["global_cluster"] == {
        "id": GLOBAL,
        "writer_region": PRIMARY,
        "seen_from": {PRIMARY: PRIMARY, DR: PRIMARY},
    }
    primary, dr = shown["regions"][PRIMARY], shown["regions"][DR]
    assert list(shown["regions"]) == [PRIMARY, DR]
    assert (primary["role"], primary["writer"], primary["processing"], primary["reachable"]) == (
        "primary", True, True, True,
    )  # fmt: skip
    assert (dr["role"], dr["writer"], dr["processing"], dr["reachable"]) == ("dr", False, False, True)
    assert primary["processing_state"] == "Enabled"
    assert dr["processing_state"] == "Disabled"

    assert primary["readiness"]["verdict"] == "ready"
    assert primary["readiness"]["reasons"] == []
    assert primary["readiness"]["lag_seconds"] == {"aurora": 0.0, "dynamodb": 0.4, "s3": 1.1}
    assert primary["readiness"]["measured_at"] == iso(NOW - 30)
    assert primary["readiness"]["measured_at_epoch"] == NOW - 30
    assert dr["readiness"]["verdict"] == "degraded"
    assert dr["readiness"]["reasons"] == ["dynamodb_lag_above_warning", "s3_lag_unknown"]
    assert dr["readiness"]["lag_seconds"] == {"aurora": 0.25, "dynamodb": 2.5, "s3": None}
    assert dr["readiness"]["last_known_lag_seconds"] == {"aurora": None, "dynamodb": None, "s3": 3.0}
    assert dr["readiness"]["dependencies"] == dict.fromkeys(("database", "table", "bucket", "queue", "metrics"), OK)
    assert dr["peer"] == {"region": PRIMARY, "healthy": True, "heartbeat_age_seconds": 7.5, "probed": True}
    assert primary["peer"]["region"] == DR

    assert dr["resources"] == {
        "app_stack": "tandem-app-dr",
        "table": TABLE,
        "processor_function": regions.functions[DR],
        "cluster": f"{GLOBAL}-dr",
    }
    assert primary["errors"] == dr["errors"] == []
    assert primary["error"] is dr["error"] is None


def test_record_age_is_measured_from_now(regions: Regions) -> None:
    regions.write_readiness(PRIMARY, lags=dict.fromkeys(Store, 0.0), measured_at=NOW - 75.04)
    assert view()["regions"][PRIMARY]["readiness"]["age_seconds"] == 75.0


def test_not_ready_and_unhealthy_peer_are_shown_as_recorded(regions: Regions) -> None:
    deps = {**dict.fromkeys(Dependency, OK), Dependency.DATABASE: "ConnectionRefusedError"}
    regions.write_readiness(DR, dependencies=deps, lags=dict.fromkeys(Store, 0.1), peer_healthy=False,
                            peer_heartbeat_age=95.0)  # fmt: skip
    dr = view()["regions"][DR]
    assert dr["readiness"]["verdict"] == "not_ready"
    assert dr["readiness"]["reasons"] == ["own_database_unreachable"]
    assert dr["readiness"]["dependencies"]["database"] == "ConnectionRefusedError"
    assert dr["peer"]["healthy"] is False
    assert dr["peer"]["heartbeat_age_seconds"] == 95.0


def test_a_missing_record_is_unknown_never_a_verdict(regions: Regions) -> None:
    regions.write_readiness(PRIMARY, lags=dict.fromkeys(Store, 0.0))
    shown = view()
    dr = shown["regions"][DR]
    assert dr["reachable"] is True
    assert dr["readiness"]["verdict"] == "unknown"
    assert dr["readiness"]["reasons"] == ["no_readiness_record"]
    assert dr["readiness"]["lag_seconds"] == {"aurora": None, "dynamodb": None, "s3": None}
    assert dr["readiness"]["measured_at"] is None
    assert dr["peer"] == {"region": PRIMARY, "healthy": None, "heartbeat_age_seconds": None, "probed": None}
    assert shown["regions"][PRIMARY]["readiness"]["verdict"] == "ready"


@pytest.mark.parametrize(
    "attributes",
    [
        {"verdict": {"S": "splendid"}, "reasons": {"L": []}},
        {"verdict": {"S": "ready"}},
        {"verdict": {"S": "ready"}, "reasons": {"S": "not a list"}},
        {"verdict": {"N": "1"}, "reasons": {"L": []}},
    ],
)
def test_a_record_the_monitor_did_not_write_is_unknown(regions: Regions, attributes: dict[str, Any]) -> None:
    item = {**readiness_key(DR), **attributes}
    regions.client(DR, "dynamodb").put_item(TableName=TABLE, Item=item)
    dr = view()["regions"][DR]
    assert dr["readiness"]["verdict"] == "unknown"
    assert dr["readiness"]["reasons"] == ["readiness_record_malformed"]


def test_an_item_no_sdk_would_write_is_unknown_too() -> None:
    readiness, peer = status.readiness_view({"verdict": {"BOGUS": "x"}}, NOW)
    assert (readiness["verdict"], readiness["reasons"]) == ("unknown", ["readiness_record_malformed"])
    assert peer == {"healthy": None, "heartbeat_age_seconds": None, "probed": None}


def test_processing_follows_the_mapping_state(regions: Regions) -> None:
    regions.client(DR, "lambda").update_event_source_mapping(UUID=regions.mappings[DR], Enabled=True)
    regions.client(PRIMARY, "lambda").update_event_source_mapping(UUID=regions.mappings[PRIMARY], Enabled=False)
    shown = view()["regions"]
    assert (shown[PRIMARY]["processing"], shown[DR]["processing"]) == (False, True)

    regions.client(DR, "lambda").delete_event_source_mapping(UUID=regions.mappings[DR])
    dr = view()["regions"][DR]
    assert (dr["processing"], dr["processing_state"]) == (False, "no mapping")


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["Enabled"], True),
        (["Disabled"], False),
        (["Disabled", "Enabled"], True),
        (["Enabling"], None),
        (["Disabling"], None),
        ([], False),
    ],
)
def test_processing_of_every_mapping_state(states: list[str], expected: bool | None) -> None:
    class Lambda:
        def list_event_source_mappings(self, **_: Any) -> dict[str, Any]:
            arn = "arn:aws:sqs:us-east-1:123456789012:q"
            return {"EventSourceMappings": [{"State": s, "EventSourceArn": arn} for s in states]}

    class Source:
        def client(self, _region: str, _service: str) -> Any:
            return Lambda()

    calls = status._Calls(Source(), PRIMARY)
    processing, _ = status._processing(calls, status.RegionTarget(PRIMARY, "primary", processor_function="fn"))
    assert processing is expected


# ---------------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (EndpointConnectionError(endpoint_url="https://dynamodb.us-west-2.amazonaws.com/"), "Could not connect"),
        (ReadTimeoutError(endpoint_url="https://lambda.us-west-2.amazonaws.com/"), "Read timeout"),
        (
            ClientError(
                {"Error": {"Code": "ServiceUnavailable", "Message": "try\nlater"},
                 "ResponseMetadata": {"HTTPStatusCode": 503}}, "DescribeStacks",
            ),
            "ServiceUnavailable try later",
        ),
    ],
)  # fmt: skip
def test_a_region_that_does_not_answer_is_unreachable_and_the_other_still_shown(
    regions: Regions, error: Exception, shown: str
) -> None:
    regions.write_readiness(PRIMARY, lags=dict.fromkeys(Store, 0.0))
    regions.write_readiness(DR, lags=dict.fromkeys(Store, 0.1))

    result = view(Failing(DR, error))

    dr, primary = result["regions"][DR], result["regions"][PRIMARY]
    assert dr["reachable"] is False
    assert shown in dr["error"]
    assert "\n" not in dr["error"]
    assert dr["error"].startswith("cloudformation describe_stacks: ")  # the first call; the rest were skipped
    assert dr["processing"] is None
    assert dr["readiness"]["verdict"] == "unknown"
    assert dr["readiness"]["reasons"] == ["region_unreachable"]
    assert (dr["writer"], dr["writer_seen_from"]) == (False, PRIMARY)  # the global cluster, as the primary sees it
    assert primary["reachable"] is True
    assert (primary["writer"], primary["processing"], primary["readiness"]["verdict"]) == (True, True, "ready")
    assert result["global_cluster"]["writer_region"] == PRIMARY
    assert result["global_cluster"]["seen_from"] == {PRIMARY: PRIMARY}


def test_an_error_answer_is_not_an_outage(regions: Regions) -> None:
    """An API that answers with a 4xx (here: no such stack) leaves the region reachable; samconfig fills in."""
    regions.client(DR, "cloudformation").delete_stack(StackName="tandem-app-dr")
    regions.write_readiness(DR, lags=dict.fromkeys(Store, 0.1))
    dr = view()["regions"][DR]
    assert dr["reachable"] is True
    assert any("describe_stacks: ValidationError" in e for e in dr["errors"])
    assert any("function name unknown" in e for e in dr["errors"])
    assert dr["processing"] is None
    assert dr["readiness"]["verdict"] == "ready"  # the table name came from the other stack
    assert dr["writer"] is False


def test_a_table_that_refuses_is_unreadable_not_unknown_for_lack_of_a_record(regions: Regions) -> None:
    regions.client(DR, "dynamodb").delete_table(TableName=TABLE)
    dr = view()["regions"][DR]
    assert dr["reachable"] is True
    assert dr["readiness"]["verdict"] == "unknown"
    assert dr["readiness"]["reasons"] == ["readiness_unreadable"]
    assert any(e.startswith("dynamodb get_item: ResourceNotFoundException") for e in dr["errors"])
    assert (dr["writer"], dr["processing"]) == (False, False)


def test_a_record_read_before_the_region_failed_is_still_shown(regions: Regions) -> None:
    """DynamoDB answered, then RDS failed with a 5xx: the region is unreachable, but its record was read."""
    regions.write_readiness(DR, lags=dict.fromkeys(Store, 0.1))
    real = status.AwsClients()
    unavailable = ClientError(
        {"Error": {"Code": "InternalFailure", "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
        "DescribeGlobalClusters",
    )

    class RdsDown:
        def client(self, region: str, service: str) -> Any:
            if (region, service) == (DR, "rds"):
                return Failing(DR, unavailable).client(DR, service)
            return real.client(region, service)

    dr = view(RdsDown())["regions"][DR]
    assert dr["reachable"] is False
    assert dr["error"] == "rds describe_global_clusters: InternalFailure x"
    assert dr["readiness"]["verdict"] == "ready"
    assert (dr["processing"], dr["writer"], dr["writer_seen_from"]) == (False, False, PRIMARY)


def test_both_regions_down_is_still_a_view(regions: Regions, capsys: pytest.CaptureFixture[str]) -> None:
    class AllDown:
        def client(self, region: str, _service: str) -> Any:
            return Failing(region, EndpointConnectionError(endpoint_url=f"https://{region}")).client(region, "x")

    result = view(AllDown())
    assert [r["reachable"] for r in result["regions"].values()] == [False, False]
    assert result["global_cluster"] == {"id": GLOBAL, "writer_region": None, "seen_from": {}}
    assert all(r["writer"] is None for r in result["regions"].values())
    text = status.describe(result)
    assert text.count("NO - cloudformation describe_stacks: Could not connect") == 2


# ---------------------------------------------------------------------------------------------- human output
def test_human_output_is_a_table_per_region(regions: Regions, capsys: pytest.CaptureFixture[str]) -> None:
    regions.write_readiness(PRIMARY, lags={Store.AURORA: 0.0, Store.DYNAMODB: 0.4, Store.S3: 1.1})

    code, out, _ = run_cli(capsys, "status", "--target", "aws")

    assert code == 0
    assert out.splitlines()[0].startswith("tandem status (aws, ")
    assert "global writer us-east-1 (global cluster tandem-ledger)" in out.splitlines()[0]
    blocks = out.split("\n\n")
    assert blocks[1].splitlines()[0] == "us-east-1  primary"
    assert "  writer      yes" in blocks[1]
    assert "  processing  on (mapping Enabled)" in blocks[1]
    assert "  readiness   ready, measured " in blocks[1]
    assert "  lag         aurora 0 s  dynamodb 0.4 s  s3 1.1 s" in blocks[1]
    assert "  peer        us-west-2: healthy, heartbeat 4.2 s old" in blocks[1]
    assert blocks[2].splitlines()[0] == "us-west-2  dr"
    assert "  readiness   unknown" in blocks[2]
    assert "  reasons     no_readiness_record" in blocks[2]
    assert "  processing  off (mapping Disabled)" in blocks[2]


# ---------------------------------------------------------------------------------------------- could not run
def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


def test_no_twin_and_no_target_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _refused(capsys, "status", "--state-dir", str(tmp_path))
    assert "the twin is not running" in err
    assert "--target aws" in err
    assert "--target aws" not in _refused(capsys, "status", "--target", "twin", "--state-dir", str(tmp_path))


def test_profile_is_for_aws_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--profile applies to --target aws only" in _refused(capsys, "status", "--target", "twin", "--profile", "p")


def test_state_dir_is_for_the_twin_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _refused(capsys, "status", "--target", "aws", "--state-dir", str(tmp_path))
    assert "--state-dir applies to the twin only" in err


def test_a_twin_status_of_another_shape_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"the twin's /status is not what tandem status reads \(KeyError"):
        status.twin_targets({"regions": {PRIMARY: {"role": "primary"}}})


def test_an_unknown_profile_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    assert "no-such-profile" in _refused(capsys, "status", "--profile", "no-such-profile")  # --profile implies aws


def test_no_credentials_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(key, raising=False)
    assert "no AWS credentials" in _refused(capsys, "status", "--target", "aws")


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["status", "--target", "moon"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_samconfig_regions_and_stacks() -> None:
    targets = status.aws_targets()
    assert [(t.region, t.role, t.peer_region, t.app_stack, t.global_stack) for t in targets] == [
        (PRIMARY, "primary", DR, "tandem-app-primary", "tandem-global-primary"),
        (DR, "dr", PRIMARY, "tandem-app-dr", "tandem-global-secondary"),
    ]
    assert all(t.table == TABLE and t.global_cluster == GLOBAL for t in targets)


def test_wall_clock_is_the_default(regions: Regions) -> None:
    regions.write_readiness(PRIMARY, lags=dict.fromkeys(Store, 0.0), measured_at=time.time() - 10)
    age = status.aws_view(None)["regions"][PRIMARY]["readiness"]["age_seconds"]
    assert 9 <= age < 60

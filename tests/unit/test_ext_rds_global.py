"""Aurora global switchover/failover on moto (tandem.twin.extensions.rds_global)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tandem.twin.extensions import rds_global
from tandem.twin.extensions.rds_global import PromotionRequest

GLOBAL = "tandem-global"
PRIMARY, DR = "us-east-1", "us-west-2"


@pytest.fixture
def rds(aws_env: None) -> Iterator[dict[str, Any]]:
    """A global cluster with its writer in us-east-1 and a secondary in us-west-2; clients per region."""
    rds_global.install()
    with mock_aws():
        clients = {region: boto3.client("rds", region_name=region) for region in (PRIMARY, DR)}
        clients[PRIMARY].create_global_cluster(GlobalClusterIdentifier=GLOBAL, Engine="aurora-postgresql")
        for region in (PRIMARY, DR):
            clients[region].create_db_cluster(
                DBClusterIdentifier=f"{GLOBAL}-{region}",
                Engine="aurora-postgresql",
                GlobalClusterIdentifier=GLOBAL,
                **({"MasterUsername": "tandem", "MasterUserPassword": "secret123"} if region == PRIMARY else {}),
            )
        yield clients
    rds_global.set_promotion_handler(None)


def arn(clients: dict[str, Any], region: str) -> str:
    cluster = clients[region].describe_db_clusters(DBClusterIdentifier=f"{GLOBAL}-{region}")["DBClusters"][0]
    return str(cluster["DBClusterArn"])


def writers(client: Any) -> dict[str, bool]:
    members = client.describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
    return {m["DBClusterArn"].split(":")[3]: m["IsWriter"] for m in members["GlobalClusterMembers"]}


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_switchover_moves_the_writer_as_seen_from_both_regions(rds: dict[str, Any]) -> None:
    assert writers(rds[DR]) == {PRIMARY: True, DR: False}

    out = rds[DR].switchover_global_cluster(GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR))

    cluster = out["GlobalCluster"]
    assert cluster["GlobalClusterIdentifier"] == GLOBAL
    assert cluster["Status"] == "switching-over"
    assert cluster["FailoverState"] == {
        "Status": "pending",
        "FromDbClusterArn": arn(rds, PRIMARY),
        "ToDbClusterArn": arn(rds, DR),
        "IsDataLossAllowed": False,
    }
    for client in rds.values():
        assert writers(client) == {PRIMARY: False, DR: True}
        described = client.describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
        assert described["Status"] == "available"
        assert "FailoverState" not in described  # empty again once the operation has completed, as in AWS


def test_failover_with_data_loss_moves_the_writer_and_back(rds: dict[str, Any]) -> None:
    out = rds[DR].failover_global_cluster(
        GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR), AllowDataLoss=True
    )
    assert out["GlobalCluster"]["Status"] == "failing-over"
    assert out["GlobalCluster"]["FailoverState"]["IsDataLossAllowed"] is True
    assert writers(rds[PRIMARY]) == writers(rds[DR]) == {PRIMARY: False, DR: True}

    # Fail back by plain identifier, from the other region, as a switchover (AllowDataLoss omitted).
    out = rds[PRIMARY].failover_global_cluster(
        GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=f"{GLOBAL}-{PRIMARY}"
    )
    assert out["GlobalCluster"]["FailoverState"]["IsDataLossAllowed"] is False
    assert writers(rds[DR]) == {PRIMARY: True, DR: False}


def test_handler_receives_the_request_before_the_flip(rds: dict[str, Any]) -> None:
    seen: list[tuple[PromotionRequest, dict[str, bool], str]] = []

    def handler(request: PromotionRequest) -> None:
        described = rds[PRIMARY].describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
        seen.append((request, writers(rds[PRIMARY]), described["FailoverState"]["Status"]))

    rds_global.set_promotion_handler(handler)
    rds[DR].failover_global_cluster(
        GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR), AllowDataLoss=True
    )
    rds[PRIMARY].switchover_global_cluster(GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, PRIMARY))

    assert [entry[0] for entry in seen] == [
        PromotionRequest(GLOBAL, arn(rds, PRIMARY), arn(rds, DR), DR, "failover"),
        PromotionRequest(GLOBAL, arn(rds, DR), arn(rds, PRIMARY), PRIMARY, "switchover"),
    ]
    # The handler ran while the old writer was still the writer, and the operation was visible in progress.
    assert [entry[1] for entry in seen] == [{PRIMARY: True, DR: False}, {PRIMARY: False, DR: True}]
    assert [entry[2] for entry in seen] == ["failing-over", "switching-over"]


def test_a_failing_handler_fails_the_call_and_changes_nothing(rds: dict[str, Any]) -> None:
    def handler(request: PromotionRequest) -> None:
        raise RuntimeError("standby did not catch up")

    rds_global.set_promotion_handler(handler)
    with pytest.raises(ClientError) as exc:
        rds[DR].switchover_global_cluster(GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR))
    assert error_code(exc) == "InvalidGlobalClusterStateFault"
    assert "standby did not catch up" in exc.value.response["Error"]["Message"]
    assert writers(rds[DR]) == {PRIMARY: True, DR: False}
    described = rds[DR].describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
    assert described["Status"] == "available"
    assert "FailoverState" not in described

    rds_global.set_promotion_handler(None)  # the cluster is usable again afterwards
    rds[DR].switchover_global_cluster(GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR))
    assert writers(rds[DR]) == {PRIMARY: False, DR: True}


@pytest.mark.parametrize(
    ("global_id", "target", "code"),
    [
        ("no-such-global", None, "GlobalClusterNotFoundFault"),
        (GLOBAL, "arn:aws:rds:us-west-2:123456789012:cluster:no-such-cluster", "DBClusterNotFoundFault"),
        (GLOBAL, "no-such-cluster", "DBClusterNotFoundFault"),
        (GLOBAL, "PRIMARY", "InvalidParameterValue"),  # already the writer
    ],
)
def test_validation_errors(rds: dict[str, Any], global_id: str, target: str | None, code: str) -> None:
    target_id = arn(rds, DR) if target is None else arn(rds, PRIMARY) if target == "PRIMARY" else target
    for call in (rds[DR].switchover_global_cluster, rds[DR].failover_global_cluster):
        with pytest.raises(ClientError) as exc:
            call(GlobalClusterIdentifier=global_id, TargetDbClusterIdentifier=target_id)
        assert error_code(exc) == code
    assert writers(rds[DR]) == {PRIMARY: True, DR: False}


def test_target_outside_the_global_cluster_is_invalid(rds: dict[str, Any]) -> None:
    rds[DR].create_db_cluster(
        DBClusterIdentifier="standalone", Engine="aurora-postgresql", MasterUsername="x", MasterUserPassword="y" * 8
    )
    standalone = rds[DR].describe_db_clusters(DBClusterIdentifier="standalone")["DBClusters"][0]["DBClusterArn"]
    with pytest.raises(ClientError) as exc:
        rds[DR].switchover_global_cluster(GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=standalone)
    assert error_code(exc) == "InvalidParameterValue"


def test_allow_data_loss_and_switchover_are_exclusive(rds: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        rds[DR].failover_global_cluster(
            GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR), AllowDataLoss=True, Switchover=True
        )
    assert error_code(exc) == "InvalidParameterCombination"


def test_describe_honours_the_identifier(rds: dict[str, Any]) -> None:
    rds[PRIMARY].create_global_cluster(GlobalClusterIdentifier="other", Engine="aurora-postgresql")
    assert len(rds[DR].describe_global_clusters()["GlobalClusters"]) == 2
    only = rds[DR].describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"]
    assert [c["GlobalClusterIdentifier"] for c in only] == [GLOBAL]
    with pytest.raises(ClientError) as exc:
        rds[DR].describe_global_clusters(GlobalClusterIdentifier="missing")
    assert error_code(exc) == "GlobalClusterNotFoundFault"


def test_global_cluster_from_an_existing_cluster_has_that_cluster_as_writer(aws_env: None) -> None:
    rds_global.install()
    with mock_aws():
        client = boto3.client("rds", region_name=PRIMARY)
        source = client.create_db_cluster(
            DBClusterIdentifier="source", Engine="aurora-postgresql", MasterUsername="x", MasterUserPassword="y" * 8
        )["DBCluster"]["DBClusterArn"]
        client.create_global_cluster(GlobalClusterIdentifier="g", SourceDBClusterIdentifier=source)
        members = client.describe_global_clusters(GlobalClusterIdentifier="g")["GlobalClusters"][0]
        assert [(m["DBClusterArn"], m["IsWriter"]) for m in members["GlobalClusterMembers"]] == [(source, True)]


def test_a_handler_that_finishes_later_is_accepted_at_once_and_flips_when_done(rds: dict[str, Any]) -> None:
    """A slow control plane: the call returns, the switch shows in progress, the writer flips on completion."""
    pending: list[Future[None]] = []

    def handler(request: PromotionRequest) -> Future[None]:
        pending.append(Future())
        return pending[-1]

    rds_global.set_promotion_handler(handler)
    out = rds[DR].switchover_global_cluster(GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR))
    assert out["GlobalCluster"]["Status"] == "switching-over"
    described = rds[PRIMARY].describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
    assert (described["Status"], described["FailoverState"]["Status"]) == ("switching-over", "switching-over")
    assert writers(rds[PRIMARY]) == {PRIMARY: True, DR: False}
    with pytest.raises(ClientError) as exc:  # one operation at a time, as AWS
        rds[DR].failover_global_cluster(
            GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR), AllowDataLoss=True
        )
    assert error_code(exc) == "InvalidGlobalClusterStateFault"

    pending[0].set_result(None)
    assert writers(rds[PRIMARY]) == writers(rds[DR]) == {PRIMARY: False, DR: True}
    described = rds[DR].describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
    assert described["Status"] == "available"
    assert "FailoverState" not in described


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_promotion_that_fails_or_is_cancelled_later_leaves_the_writer(rds: dict[str, Any], outcome: str) -> None:
    pending: Future[None] = Future()
    rds_global.set_promotion_handler(lambda request: pending)
    rds[DR].failover_global_cluster(
        GlobalClusterIdentifier=GLOBAL, TargetDbClusterIdentifier=arn(rds, DR), AllowDataLoss=True
    )
    if outcome == "failed":
        pending.set_exception(RuntimeError("the standby is gone"))
    else:
        assert pending.cancel()
    assert writers(rds[DR]) == {PRIMARY: True, DR: False}
    described = rds[DR].describe_global_clusters(GlobalClusterIdentifier=GLOBAL)["GlobalClusters"][0]
    assert described["Status"] == "available"
    assert "FailoverState" not in described

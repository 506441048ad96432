"""infra_global/template.yaml: the data layer both regions stand on, checked as each role deploys it.

One template serves both regions (RegionRole primary|secondary). Each test looks at the template the way
CloudFormation would deploy it for a role: conditions evaluated, inactive resources and ``AWS::NoValue``
dropped, ``Fn::If``/``Fn::FindInMap`` applied; ``Ref``/``Fn::GetAtt``/``Fn::Sub`` to resources stay symbolic.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tandem.template import APP_TEMPLATE, GLOBAL_TEMPLATE, Template, load, samconfig_parameters

ACCOUNT = "111122223333"
PRIMARY_REGION, DR_REGION = "us-east-1", "us-west-2"
PRIMARY_KEY = f"arn:aws:kms:{PRIMARY_REGION}:{ACCOUNT}:key/1111aaaa-1111-aaaa-1111-aaaa1111aaaa"
DR_KEY = f"arn:aws:kms:{DR_REGION}:{ACCOUNT}:key/2222bbbb-2222-bbbb-2222-bbbb2222bbbb"
PRIMARY_SECRET = (
    f"arn:aws:secretsmanager:{PRIMARY_REGION}:{ACCOUNT}:secret:tandem/tandem-global-primary/ledger-db-master-AbC123"
)
DNS = {
    "HostedZoneId": "Z0123456789ABC",
    "RecordName": "txn.example.com",
    "PrimaryIngressDomain": "primary.txn.example.com",
    "DrIngressDomain": "dr.txn.example.com",
    "PrimaryHealthCheckDomain": "abc123.execute-api.us-east-1.amazonaws.com",
    "DrHealthCheckDomain": "def456.execute-api.us-west-2.amazonaws.com",
}
GATE_ALARM = "tandem-primary-active-gate"
#: The app template's data-layer parameters that the global stack must publish (issue list).
APP_DATA_PARAMETERS = (
    "LedgerTableName",
    "DataKeyArn",
    "ArchiveBucketName",
    "LedgerDbHost",
    "LedgerDbReaderHost",
    "LedgerDbSecretArn",
    "SubnetIds",
    "SecurityGroupIds",
)


@dataclass
class Deployment:
    """The template as one role deploys it (through :meth:`Template.expand`)."""

    tpl: Template
    resources: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]

    @property
    def app_role(self) -> str:
        return "primary" if self.tpl.parameter("RegionRole") == "primary" else "dr"

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def props(self, logical_id: str) -> dict[str, Any]:
        props: dict[str, Any] = self.resources[logical_id].get("Properties", {})
        return props

    def text(self, value: Any) -> str:
        """A string that only depends on parameters and pseudo parameters, resolved."""
        return str(self.tpl.resolve(value))


def deploy(role: str, *, peer: bool = True, dns: bool = True) -> Deployment:
    primary = role == "primary"
    params = {"RegionRole": role, "PeerRegion": DR_REGION if primary else PRIMARY_REGION}
    if peer:
        params["PeerDataKeyArn"] = DR_KEY if primary else PRIMARY_KEY
        if not primary:
            params["PrimaryLedgerDbSecretArn"] = PRIMARY_SECRET
    if dns:
        params.update(DNS)
    region = PRIMARY_REGION if primary else DR_REGION
    tpl = Template(load(GLOBAL_TEMPLATE), parameters=params, region=region, account=ACCOUNT)
    tpl.validate()  # parameters, conditions and Rules: a deployment CloudFormation would accept
    resources = {k: tpl.expand(v) for k, v in tpl.active_resources().items()}
    return Deployment(tpl, resources, {k: tpl.expand(v) for k, v in tpl.active_outputs().items()})


@pytest.fixture(scope="module", params=["primary", "secondary"])
def role(request: pytest.FixtureRequest) -> Deployment:
    return deploy(str(request.param))


@pytest.fixture(scope="module")
def primary() -> Deployment:
    return deploy("primary")


@pytest.fixture(scope="module")
def secondary() -> Deployment:
    return deploy("secondary")


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every mapping entry, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}/{k}", k, v
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(policy_document["Statement"])


# ---------------------------------------------------------------- one template, two roles


def test_one_template_serves_both_roles_with_role_only_resources() -> None:
    doc = load(GLOBAL_TEMPLATE)
    assert doc["Parameters"]["RegionRole"]["AllowedValues"] == ["primary", "secondary"]
    p, s = deploy("primary"), deploy("secondary")
    # created once, in the primary deployment: the global cluster, the global table (it creates its DR
    # replica itself), DNS; the gate alarm lives in the DR region so failover can flip it from there
    for cfn_type in ("AWS::RDS::GlobalCluster", "AWS::DynamoDB::GlobalTable", "AWS::Route53::RecordSet"):
        assert p.of_type(cfn_type), cfn_type
        assert not s.of_type(cfn_type), cfn_type
    assert not p.of_type("AWS::CloudWatch::Alarm")
    assert [a["Properties"]["AlarmName"] for a in s.of_type("AWS::CloudWatch::Alarm").values()] == [GATE_ALARM]
    # both regions: network, key, bucket, vault, a cluster member
    for d in (p, s):
        for cfn_type in ("AWS::EC2::VPC", "AWS::KMS::Key", "AWS::S3::Bucket", "AWS::Backup::BackupVault"):
            assert d.of_type(cfn_type), cfn_type
        assert len(d.of_type("AWS::RDS::DBCluster")) == 1
        assert len(d.of_type("AWS::RDS::DBInstance")) == 1


def test_first_secondary_deployment_creates_nothing_cross_region() -> None:
    """Deploy order step 1: the DR key must exist before the primary names it, so nothing needs the peer."""
    boot = deploy("secondary", peer=False)
    assert boot.of_type("AWS::KMS::Key")
    assert boot.of_type("AWS::CloudWatch::Alarm")  # the gate exists before the primary's health check reads it
    assert not boot.of_type("AWS::RDS::DBCluster")
    assert "ReplicationRole" not in boot.resources
    assert all("ReplicationConfiguration" not in b["Properties"] for b in boot.of_type("AWS::S3::Bucket").values())
    assert "LedgerDbHost" not in boot.outputs
    assert "LedgerDbReaderHost" not in boot.outputs
    lone = deploy("primary", peer=False)
    (table,) = lone.of_type("AWS::DynamoDB::GlobalTable").values()
    assert len(table["Properties"]["Replicas"]) == 1
    assert "ReplicaRegions" not in lone.props("LedgerDbMasterSecret")


# ---------------------------------------------------------------- network


def test_vpc_is_private_with_gateway_endpoints_and_no_nat(role: Deployment) -> None:
    for forbidden in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP", "AWS::EC2::Route"):
        assert not role.of_type(forbidden), forbidden
    subnets = role.of_type("AWS::EC2::Subnet")
    assert len(subnets) == 3
    assert sorted(s["Properties"]["AvailabilityZone"]["Fn::Select"][0] for s in subnets.values()) == [0, 1, 2]
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    endpoints = {
        role.text(e["Properties"]["ServiceName"]).rsplit(".", 1)[1]: e["Properties"]
        for e in role.of_type("AWS::EC2::VPCEndpoint").values()
    }
    for service in ("dynamodb", "s3"):
        assert endpoints[service]["VpcEndpointType"] == "Gateway"
        assert endpoints[service]["RouteTableIds"] == [{"Ref": "PrivateRouteTable"}]
    secrets = endpoints["secretsmanager"]
    assert secrets["VpcEndpointType"] == "Interface"
    assert secrets["PrivateDnsEnabled"] is True
    assert len(secrets["SubnetIds"]) == 3
    assert role.of_type("AWS::EC2::FlowLog")


def _ingress(d: Deployment, group: str) -> list[dict[str, Any]]:
    rules = list(d.props(group).get("SecurityGroupIngress", []))
    for res in d.of_type("AWS::EC2::SecurityGroupIngress").values():
        if res["Properties"]["GroupId"] in ({"Ref": group}, {"Fn::GetAtt": [group, "GroupId"]}):
            rules.append(res["Properties"])
    return rules


def test_database_accepts_only_postgres_from_the_processor(role: Deployment) -> None:
    rules = _ingress(role, "DatabaseSecurityGroup")
    assert rules
    for rule in rules:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)
        assert rule["SourceSecurityGroupId"] == {"Ref": "ProcessorSecurityGroup"}
        assert not {"CidrIp", "CidrIpv6", "SourcePrefixListId"} & set(rule)
    for cluster in role.of_type("AWS::RDS::DBCluster").values():
        assert cluster["Properties"]["VpcSecurityGroupIds"] == [{"Ref": "DatabaseSecurityGroup"}]
    endpoint_rules = _ingress(role, "EndpointSecurityGroup")
    assert [(r["FromPort"], r["SourceSecurityGroupId"]) for r in endpoint_rules] == [
        (443, {"Ref": "ProcessorSecurityGroup"})
    ]
    assert not _ingress(role, "ProcessorSecurityGroup")


# ---------------------------------------------------------------- KMS


def test_data_key_rotates_and_crypto_use_is_scoped_to_services(role: Deployment) -> None:
    (key,) = role.of_type("AWS::KMS::Key").values()
    props = key["Properties"]
    assert props["EnableKeyRotation"] is True
    crypto = {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:CreateGrant", "kms:*"}
    via = set()
    for st in _statements(props["KeyPolicy"]):
        assert st["Effect"] == "Allow"
        principal = st["Principal"]
        assert principal != "*", st
        assert principal.get("AWS") != "*", st
        actions = set(_as_list(st["Action"]))
        assert "kms:*" not in actions, st
        if actions & crypto:
            assert "Condition" in st, st  # either kms:ViaService or a service principal bound by context
            via |= {role.text(s) for s in st["Condition"].get("StringEquals", {}).get("kms:ViaService", [])}
    region = role.tpl.region
    assert {f"{svc}.{region}.amazonaws.com" for svc in ("dynamodb", "s3", "rds", "secretsmanager", "backup")} <= via


# ---------------------------------------------------------------- Aurora


def test_global_cluster_does_not_use_source_db_cluster_identifier(primary: Deployment) -> None:
    """The drift trap: SourceDBClusterIdentifier drifts after a switchover and an update tries to undo it."""
    (gc_id, gc), *rest = primary.of_type("AWS::RDS::GlobalCluster").items()
    assert not rest
    props = gc["Properties"]
    assert "SourceDBClusterIdentifier" not in props
    assert props["Engine"] == "aurora-postgresql"
    assert props["EngineVersion"] == {"Ref": "EngineVersion"}
    assert props["StorageEncrypted"] is True
    assert primary.props("PrimaryCluster")["GlobalClusterIdentifier"] == {"Ref": gc_id}
    assert "GlobalCluster" in load(GLOBAL_TEMPLATE)["Metadata"]["Tandem"]["GlobalClusterDrift"]


def test_secondary_joins_the_global_cluster_without_credentials(secondary: Deployment) -> None:
    (cluster,) = secondary.of_type("AWS::RDS::DBCluster").values()
    props = cluster["Properties"]
    assert props["GlobalClusterIdentifier"] == {"Ref": "GlobalClusterIdentifier"}
    for key in ("MasterUsername", "MasterUserPassword", "ManageMasterUserPassword", "DatabaseName"):
        assert key not in props
    assert props["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}  # this region's key


def test_aurora_is_encrypted_iam_auth_tls_only_serverless_v2(role: Deployment) -> None:
    (cluster,) = role.of_type("AWS::RDS::DBCluster").values()
    props = cluster["Properties"]
    assert props["EnableIAMDatabaseAuthentication"] is True
    assert props["StorageEncrypted"] is True
    assert props["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert int(props["BackupRetentionPeriod"]) >= 7
    assert props["EnableCloudwatchLogsExports"] == ["postgresql"]
    assert props["DBSubnetGroupName"] == {"Ref": "DbSubnetGroup"}
    assert props["ServerlessV2ScalingConfiguration"] == {
        "MinCapacity": {"Ref": "MinCapacity"},
        "MaxCapacity": {"Ref": "MaxCapacity"},
    }
    assert props["DeletionProtection"] == {"Ref": "DeletionProtection"}
    group = role.props(props["DBClusterParameterGroupName"]["Ref"])
    assert str(group["Parameters"]["rds.force_ssl"]) == "1"
    # the parameter group family must match the engine version the global cluster runs
    version = role.tpl.doc["Parameters"]["EngineVersion"]
    major = version["Default"].split(".")[0]
    assert group["Family"] == f"aurora-postgresql{major}"
    assert re.fullmatch(version["AllowedPattern"], f"{major}.99")
    assert not re.fullmatch(version["AllowedPattern"], f"{int(major) + 1}.1")
    (instance,) = role.of_type("AWS::RDS::DBInstance").values()
    assert instance["Properties"]["DBInstanceClass"] == "db.serverless"
    assert instance["Properties"]["PubliclyAccessible"] is False


def test_no_literal_password_anywhere() -> None:
    """No password in code, parameters or outputs: generated by Secrets Manager, passed by dynamic reference.

    ManageMasterUserPassword is not used because Aurora does not support it for global database members;
    the generated secret is replicated to the DR region instead.
    """
    doc = load(GLOBAL_TEMPLATE)
    assert not [p for p in doc["Parameters"] if "password" in p.lower()]
    resources = doc["Resources"]
    secrets = {k for k, v in resources.items() if v["Type"] == "AWS::SecretsManager::Secret"}
    seen = 0
    for path, key, value in _walk(doc):
        if key in ("MasterUserPassword", "Password", "SecretString"):
            seen += key == "MasterUserPassword"
            text = value.get("Fn::Sub") if isinstance(value, dict) else value
            match = re.fullmatch(r"\{\{resolve:secretsmanager:\$\{(\w+)\}:SecretString:password\}\}", str(text))
            assert match, f"{path}: {value!r}"
            assert match.group(1) in secrets, f"{path}: {value!r}"
    assert seen == 1
    for name in secrets:
        generated = resources[name]["Properties"]["GenerateSecretString"]
        assert generated["GenerateStringKey"] == "password"
        assert int(generated["PasswordLength"]) >= 32
    p = deploy("primary")
    secret = p.props("LedgerDbMasterSecret")
    assert secret["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert secret["ReplicaRegions"] == [{"Region": {"Ref": "PeerRegion"}, "KmsKeyId": {"Ref": "PeerDataKeyArn"}}]


def test_dr_secret_is_the_replica_in_the_dr_region(secondary: Deployment) -> None:
    value = secondary.text(secondary.outputs["LedgerDbSecretArn"]["Value"])
    assert value == PRIMARY_SECRET.replace(f":{PRIMARY_REGION}:", f":{DR_REGION}:")


# ---------------------------------------------------------------- DynamoDB


def test_global_table_has_two_encrypted_pitr_replicas_and_the_status_keys(primary: Deployment) -> None:
    (table,) = primary.of_type("AWS::DynamoDB::GlobalTable").values()
    props = table["Properties"]
    assert props["TableName"] == {"Ref": "LedgerTableName"}
    assert primary.tpl.doc["Parameters"]["LedgerTableName"]["Default"] == "tandem-ledger"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == {"pk": "S", "sk": "S"}
    assert [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]] == [("pk", "HASH"), ("sk", "RANGE")]
    assert props["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
    replicas = props["Replicas"]
    assert [r["Region"] for r in replicas] == [{"Ref": "AWS::Region"}, {"Ref": "PeerRegion"}]
    assert [r["SSESpecification"]["KMSMasterKeyId"] for r in replicas] == [
        {"Fn::GetAtt": ["DataKey", "Arn"]},
        {"Ref": "PeerDataKeyArn"},
    ]
    for r in replicas:
        assert r["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert r["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"


def test_table_keys_match_what_the_status_store_writes(primary: Deployment) -> None:
    from tandem_core.status import status_key

    (table,) = primary.of_type("AWS::DynamoDB::GlobalTable").values()
    key = status_key("t-1")
    schema = {k["AttributeName"] for k in table["Properties"]["KeySchema"]}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["Properties"]["AttributeDefinitions"]}
    assert set(key) == schema
    assert {name: next(iter(v)) for name, v in key.items()} == types


# ---------------------------------------------------------------- S3


def _log_buckets(d: Deployment) -> set[str]:
    return {
        b["Properties"]["LoggingConfiguration"]["DestinationBucketName"]["Ref"]
        for b in d.of_type("AWS::S3::Bucket").values()
        if "LoggingConfiguration" in b["Properties"]
    }


def test_every_bucket_is_versioned_encrypted_private_and_data_buckets_replicate(role: Deployment) -> None:
    buckets = role.of_type("AWS::S3::Bucket")
    logs = _log_buckets(role)
    assert set(buckets) - logs == {"ArchiveBucket"}
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert all(props["PublicAccessBlockConfiguration"].values()), name
        assert len(props["PublicAccessBlockConfiguration"]) == 4, name
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        sse = rule["ServerSideEncryptionByDefault"]
        if name in logs:
            # S3 server access log delivery only supports SSE-S3 targets; this bucket holds access logs only
            assert sse == {"SSEAlgorithm": "AES256"}, name
            continue
        assert sse == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": ["DataKey", "Arn"]}}, name
        assert rule["BucketKeyEnabled"] is True
        assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": next(iter(logs))}
        replication = props["ReplicationConfiguration"]
        assert replication["Role"] == {"Fn::GetAtt": ["ReplicationRole", "Arn"]}
        assert role.resources["ReplicationRole"]["Type"] == "AWS::IAM::Role"


def test_archive_bucket_policy_denies_plain_http(role: Deployment) -> None:
    for policy in role.of_type("AWS::S3::BucketPolicy").values():
        deny = [s for s in _statements(policy["Properties"]["PolicyDocument"]) if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in deny)
    policed = {p["Properties"]["Bucket"]["Ref"] for p in role.of_type("AWS::S3::BucketPolicy").values()}
    assert policed == set(role.of_type("AWS::S3::Bucket"))


def test_replication_is_rtc_with_metrics_to_the_peer_bucket_under_the_peer_key(role: Deployment) -> None:
    (rule,) = role.props("ArchiveBucket")["ReplicationConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["SourceSelectionCriteria"]["SseKmsEncryptedObjects"] == {"Status": "Enabled"}
    dest = rule["Destination"]
    peer_role = "dr" if role.app_role == "primary" else "primary"
    assert role.text(dest["Bucket"]) == f"arn:aws:s3:::tandem-archive-{peer_role}-{ACCOUNT}"
    assert dest["EncryptionConfiguration"] == {"ReplicaKmsKeyID": {"Ref": "PeerDataKeyArn"}}
    assert dest["ReplicationTime"] == {"Status": "Enabled", "Time": {"Minutes": 15}}
    assert dest["Metrics"]["Status"] == "Enabled"
    # the bucket this region replicates into is exactly the bucket the other region creates
    other = deploy("secondary" if role.app_role == "primary" else "primary")
    assert role.text(dest["Bucket"]) == f"arn:aws:s3:::{other.text(other.props('ArchiveBucket')['BucketName'])}"


def test_replication_role_is_least_privilege(role: Deployment) -> None:
    res = role.resources["ReplicationRole"]["Properties"]
    (trust,) = _statements(res["AssumeRolePolicyDocument"])
    assert trust["Principal"] == {"Service": "s3.amazonaws.com"}
    assert "ManagedPolicyArns" not in res
    statements = [st for p in res["Policies"] for st in _statements(p["PolicyDocument"])]
    own = f"arn:aws:s3:::tandem-archive-{role.app_role}-{ACCOUNT}"
    peer = f"arn:aws:s3:::tandem-archive-{'dr' if role.app_role == 'primary' else 'primary'}-{ACCOUNT}"
    allowed = {
        "s3:GetReplicationConfiguration": {own},
        "s3:ListBucket": {own},
        "s3:GetObjectVersionForReplication": {f"{own}/*"},
        "s3:GetObjectVersionAcl": {f"{own}/*"},
        "s3:GetObjectVersionTagging": {f"{own}/*"},
        "s3:ReplicateObject": {f"{peer}/*"},
        "s3:ReplicateTags": {f"{peer}/*"},
        "s3:ReplicateDelete": {f"{peer}/*"},
    }
    kms_actions: dict[str, Any] = {}
    for st in statements:
        assert st["Effect"] == "Allow"
        actions = _as_list(st["Action"])
        resources = _as_list(st["Resource"])
        assert all("*" not in a for a in actions), st
        assert "*" not in resources, st
        for action in actions:
            if action.startswith("s3:"):
                assert {role.text(r) for r in resources} <= allowed[action], st
            else:
                assert action in ("kms:Decrypt", "kms:Encrypt"), st
                kms_actions[action] = (resources, st["Condition"])
    decrypt_resources, decrypt_condition = kms_actions["kms:Decrypt"]
    assert decrypt_resources == [{"Fn::GetAtt": ["DataKey", "Arn"]}]
    assert role.text(decrypt_condition["StringEquals"]["kms:ViaService"]) == f"s3.{role.tpl.region}.amazonaws.com"
    encrypt_resources, encrypt_condition = kms_actions["kms:Encrypt"]
    assert encrypt_resources == [{"Ref": "PeerDataKeyArn"}]
    peer_region = role.tpl.parameter("PeerRegion")
    assert role.text(encrypt_condition["StringEquals"]["kms:ViaService"]) == f"s3.{peer_region}.amazonaws.com"


def test_archive_lifecycle_moves_the_journal_to_ia_and_expires_old_versions(role: Deployment) -> None:
    rules = role.props("ArchiveBucket")["LifecycleConfiguration"]["Rules"]
    ia = [r for r in rules if r.get("Prefix") == "archive/"]
    assert ia[0]["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 90 for r in rules)


# ---------------------------------------------------------------- Backup


def test_backup_plan_keeps_seven_days_and_copies_to_the_other_region(role: Deployment) -> None:
    (vault,) = role.of_type("AWS::Backup::BackupVault").values()
    assert vault["Properties"]["EncryptionKeyArn"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    (plan,) = role.of_type("AWS::Backup::BackupPlan").values()
    (rule,) = plan["Properties"]["BackupPlan"]["BackupPlanRule"]
    assert rule["Lifecycle"] == {"DeleteAfterDays": 7}
    assert rule["ScheduleExpression"].startswith("cron(")
    (copy,) = rule["CopyActions"]
    other = deploy("secondary" if role.app_role == "primary" else "primary")
    (other_vault,) = other.of_type("AWS::Backup::BackupVault").values()
    expected = (
        f"arn:aws:backup:{other.tpl.region}:{ACCOUNT}:backup-vault:"
        f"{other.text(other_vault['Properties']['BackupVaultName'])}"
    )
    assert role.text(copy["DestinationBackupVaultArn"]) == expected
    assert copy["Lifecycle"] == {"DeleteAfterDays": 7}
    (selection,) = role.of_type("AWS::Backup::BackupSelection").values()
    arns = {role.text(r) for r in selection["Properties"]["BackupSelection"]["Resources"]}
    region = role.tpl.region
    (cluster,) = role.of_type("AWS::RDS::DBCluster").values()
    assert arns == {
        f"arn:aws:rds:{region}:{ACCOUNT}:cluster:{cluster['Properties']['DBClusterIdentifier']}",
        f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/tandem-ledger",
    }
    backup_role = role.props(selection["Properties"]["BackupSelection"]["IamRoleArn"]["Fn::GetAtt"][0])
    assert len(backup_role["ManagedPolicyArns"]) == 2


# ---------------------------------------------------------------- Route53 and the gate


def _health_check(d: Deployment, ref: Any) -> dict[str, Any]:
    config: dict[str, Any] = d.props(ref["Ref"])["HealthCheckConfig"]
    return config


def test_failover_routing_primary_and_secondary_with_short_ttl(primary: Deployment) -> None:
    records = primary.of_type("AWS::Route53::RecordSet")
    assert sorted(r["Properties"]["Failover"] for r in records.values()) == ["PRIMARY", "SECONDARY"]
    for record in records.values():
        props = record["Properties"]
        assert "Weight" not in props  # failover, not weighted
        assert "Region" not in props  # nor latency
        assert int(props["TTL"]) <= 60
        assert props["SetIdentifier"]
        assert props["Name"] == {"Ref": "RecordName"}
        assert props["HealthCheckId"]
    targets = {r["Properties"]["Failover"]: r["Properties"]["ResourceRecords"] for r in records.values()}
    assert targets == {"PRIMARY": [{"Ref": "PrimaryIngressDomain"}], "SECONDARY": [{"Ref": "DrIngressDomain"}]}


def test_primary_answer_is_guarded_by_endpoint_and_dr_region_gate(primary: Deployment, secondary: Deployment) -> None:
    records = {
        r["Properties"]["Failover"]: r["Properties"] for r in primary.of_type("AWS::Route53::RecordSet").values()
    }
    calculated = _health_check(primary, records["PRIMARY"]["HealthCheckId"])
    assert calculated["Type"] == "CALCULATED"
    children = [_health_check(primary, c) for c in calculated["ChildHealthChecks"]]
    assert int(calculated["HealthThreshold"]) == len(children) == 2  # both must be healthy
    by_type = {c["Type"]: c for c in children}
    endpoint = by_type["HTTPS"]
    assert endpoint["FullyQualifiedDomainName"] == {"Ref": "PrimaryHealthCheckDomain"}
    assert endpoint["ResourcePath"] == "/health"
    gate = by_type["CLOUDWATCH_METRIC"]
    assert primary.text(gate["AlarmIdentifier"]["Region"]) == DR_REGION
    assert gate["AlarmIdentifier"]["Name"] == GATE_ALARM
    assert gate["InsufficientDataHealthStatus"] == "LastKnownStatus"
    # the alarm it reads is the one the DR deployment creates
    (alarm,) = secondary.of_type("AWS::CloudWatch::Alarm").values()
    assert alarm["Properties"]["AlarmName"] == gate["AlarmIdentifier"]["Name"]
    dr_check = _health_check(primary, records["SECONDARY"]["HealthCheckId"])
    assert (dr_check["Type"], dr_check["FullyQualifiedDomainName"]) == ("HTTPS", {"Ref": "DrHealthCheckDomain"})
    assert dr_check["ResourcePath"] == "/health"


def test_gate_alarm_alarms_when_primary_not_active_and_latches_on_silence(secondary: Deployment) -> None:
    (alarm,) = secondary.of_type("AWS::CloudWatch::Alarm").values()
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"]) == ("Tandem/Failover", "PrimaryActive")
    assert props["Dimensions"] == [{"Name": "Gate", "Value": "primary"}]
    assert props["ComparisonOperator"] == "LessThanThreshold"
    assert float(props["Threshold"]) == 1
    # silence keeps the current state: no accidental failover, no automatic failback after one
    assert props["TreatMissingData"] == "ignore"
    assert "AlarmActions" not in props  # a switch, not a page: the failover handler reacts to other signals


def test_dns_is_optional() -> None:
    bare = deploy("primary", dns=False)
    assert not bare.of_type("AWS::Route53::RecordSet")
    assert not bare.of_type("AWS::Route53::HealthCheck")
    assert bare.of_type("AWS::RDS::GlobalCluster")


# ---------------------------------------------------------------- what the app needs


def _app_parameter_groups() -> dict[str, str]:
    """App parameter name -> CloudFormation type, for the data-layer and network groups of template.yaml."""
    app = load(APP_TEMPLATE)
    groups = app["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    names = [p for g in groups if g["Label"]["default"].startswith(("Data layer", "Network")) for p in g["Parameters"]]
    return {n: app["Parameters"][n]["Type"] for n in names}


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def test_outputs_and_ssm_cover_every_data_layer_parameter_of_the_app(role: Deployment) -> None:
    app = _app_parameter_groups()
    app_without_default = {n for n in app if "Default" not in load(APP_TEMPLATE)["Parameters"][n]}
    required = set(APP_DATA_PARAMETERS) | app_without_default
    assert required <= set(app)
    assert required <= set(role.outputs), required - set(role.outputs)
    ssm = {role.text(p["Properties"]["Name"]): p["Properties"] for p in role.of_type("AWS::SSM::Parameter").values()}
    for name in required:
        path = f"/tandem/{role.app_role}/{_kebab(name)}"
        assert path in ssm, path
        expected_type = "StringList" if "List<" in app[name] else "String"
        assert ssm[path]["Type"] == expected_type, path
        assert ssm[path]["Value"] == role.outputs[name]["Value"], path


def test_the_app_config_envs_read_what_the_global_stack_publishes(role: Deployment) -> None:
    """Nothing is copied by hand: each data-layer parameter of the app is an SSM-typed parameter whose
    value in samconfig is the name the global stack of the same region publishes."""
    config = samconfig_parameters(role.app_role)
    app_values = config.parameters
    assert app_values["RegionRole"] == role.app_role
    assert config.region == role.tpl.region
    published = {role.text(p["Properties"]["Name"]) for p in role.of_type("AWS::SSM::Parameter").values()}
    app_types = _app_parameter_groups()
    for name in APP_DATA_PARAMETERS:
        assert app_types[name].startswith("AWS::SSM::Parameter::Value<"), name
        assert app_values[name] == f"/tandem/{role.app_role}/{_kebab(name)}", name
        assert app_values[name] in published, name


def test_samconfig_has_global_envs_for_both_regions() -> None:
    for env, region, role in (
        ("global-primary", PRIMARY_REGION, "primary"),
        ("global-secondary", DR_REGION, "secondary"),
    ):
        config = samconfig_parameters(env)
        assert (config.stack_name, config.region) == (f"tandem-{env}", region)
        assert config.template_file == GLOBAL_TEMPLATE
        overrides = config.parameters
        assert overrides["RegionRole"] == role
        assert overrides["PeerRegion"] == (DR_REGION if role == "primary" else PRIMARY_REGION)
        params = load(GLOBAL_TEMPLATE)["Parameters"]
        assert set(overrides) <= set(params)
        # every value passes its AllowedPattern/AllowedValues, and the Rules hold (as CloudFormation checks)
        config.template(account=ACCOUNT).validate()


def test_every_checkov_skip_carries_a_reason() -> None:
    doc = load(GLOBAL_TEMPLATE)
    for name, res in doc["Resources"].items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), name
            assert len(skip.get("comment", "")) > 30, (name, skip)


def test_the_master_secret_rotates_with_awss_hosted_postgresql_function_in_the_primary(
    primary: Deployment, secondary: Deployment
) -> None:
    assert load(GLOBAL_TEMPLATE)["Transform"] == "AWS::SecretsManager-2020-07-23"  # the hosted function's stack
    (schedule,) = primary.of_type("AWS::SecretsManager::RotationSchedule").values()
    props = schedule["Properties"]
    assert props["SecretId"] == {"Ref": "LedgerDbMasterSecret"}
    hosted = props["HostedRotationLambda"]
    assert hosted["RotationType"] == "PostgreSQLSingleUser"  # the master user rotates itself
    assert hosted["KmsKeyArn"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert hosted["VpcSecurityGroupIds"] == {"Ref": "ProcessorSecurityGroup"}  # the database and the endpoints
    generated = primary.props("LedgerDbMasterSecret")["GenerateSecretString"]
    assert hosted["ExcludeCharacters"] == generated["ExcludeCharacters"]  # a new password as safe as the first
    assert props["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
    assert props["RotateImmediatelyOnUpdate"] is False
    assert schedule["DependsOn"] == "LedgerDbSecretAttachment"  # the function reads the cluster's host there
    assert secondary.of_type("AWS::SecretsManager::RotationSchedule") == {}  # the replica rotates with it

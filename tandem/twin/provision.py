"""Deploy a template into one emulated region: every resource the twin serves, created from its properties.

The twin is provisioned the way CloudFormation would do it: the template's active resources in dependency
order, each resolved by the one resolver (:mod:`tandem.template`) and created through the real AWS APIs of
the region's endpoint (boto3 against moto). A resource's creator returns its physical id and attributes
(what ``Ref``/``Fn::GetAtt`` of later resources and the outputs read). Creators are idempotent, because a
stack may be deployed again with new parameters (the README's deploy order deploys the DR global stack
twice): an existing resource is brought to the template's properties, not created twice.

Resource types the twin does not serve are listed in :data:`NOT_SERVED` with the reason; they get a
placeholder physical id so references to them resolve. A type in neither table stops the deployment, so a
new kind of resource in a template is a decision, never a silent gap.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tandem.template import Template, TemplateError, load


class Placeholder(dict[str, str]):
    """Physical attributes of a resource the twin does not serve: any attribute resolves to a stable name."""

    def __missing__(self, attribute: str) -> str:
        return f"{self['Ref']}-{attribute.lower().replace('.', '-')}"


class Databases(Protocol):
    """The twin's Aurora global database: which real PostgreSQL server backs a region's cluster."""

    def attach_cluster(self, region: str, props: dict[str, Any]) -> tuple[str, str, int]:
        """Record the cluster of ``region`` (creating the master user when the props carry one); (writer
        endpoint host, reader endpoint host, port)."""
        ...


@dataclass
class Stack:
    """One deployed stack: its template (resolved against what was created) and outputs."""

    name: str
    region: str
    template: Template
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def physical(self) -> dict[str, dict[str, str]]:
        return self.template.physical

    def ref(self, logical_id: str) -> str:
        return str(self.physical[logical_id]["Ref"])


@dataclass
class Region:
    """What a deployment needs of one emulated region: its AWS clients and the database behind it."""

    name: str
    client: Callable[[str], Any]
    databases: Databases | None = None
    account: str = "123456789012"


Creator = Callable[["Deployment", str, dict[str, Any]], dict[str, str]]


@dataclass
class Deployment:
    region: Region
    template: Template
    stack: str

    def client(self, service: str) -> Any:
        return self.region.client(service)

    def name_for(self, logical_id: str, limit: int = 64) -> str:
        """A generated physical name, as CloudFormation makes one (stack + logical id)."""
        return f"{self.stack}-{logical_id}"[:limit]


#: ``progress(logical_id, type, status, reason)``: CREATE_IN_PROGRESS / CREATE_COMPLETE / CREATE_FAILED of each
#: resource as provisioning reaches it (what CloudFormation reports as stack events)
Progress = Callable[[str, str, str, str], None]


def deploy(
    path: Path,
    region: Region,
    stack_name: str,
    parameters: dict[str, str],
    previous: Stack | None = None,
    creators: Mapping[str, Creator] | None = None,
) -> Stack:
    """Create (or bring up to date) every active resource of the template at ``path`` in ``region``."""
    return deploy_document(load(path), region, stack_name, parameters, previous=previous, creators=creators)


def deploy_document(
    doc: dict[str, Any],
    region: Region,
    stack_name: str,
    parameters: dict[str, str],
    *,
    previous: Stack | None = None,
    creators: Mapping[str, Creator] | None = None,
    progress: Progress | None = None,
) -> Stack:
    """Create (or bring up to date) every active resource of the template ``doc`` in ``region``.

    ``creators`` adds to :data:`CREATORS` the types whose resources live outside moto (the twin's functions).
    A resource that cannot be provided raises; the resources before it stay as they were created.
    """
    known = {**CREATORS, **(creators or {})}
    tpl = template_for(doc, region, stack_name, parameters, previous)
    deployment = Deployment(region, tpl, stack_name)
    for logical_id in tpl.deployment_order():
        resource = tpl.resource(logical_id)
        kind = str(resource["Type"])
        verb = "UPDATE" if previous is not None and logical_id in previous.physical else "CREATE"
        if progress is not None:
            progress(logical_id, kind, f"{verb}_IN_PROGRESS", "")
        try:
            if kind in NOT_SERVED:
                tpl.physical.setdefault(logical_id, Placeholder(Ref=deployment.name_for(logical_id)))
            else:
                creator = known.get(kind) or (known.get(CUSTOM_RESOURCE) if kind.startswith("Custom::") else None)
                if creator is None:
                    raise TemplateError(
                        f"{logical_id}: the twin does not know how to provide {kind}; add it to provision.py"
                    )
                props = tpl.resolve(resource.get("Properties", {}))
                tpl.physical[logical_id] = creator(deployment, logical_id, props)
        except Exception as error:
            if progress is not None:
                progress(logical_id, kind, f"{verb}_FAILED", str(error))
            raise
        if progress is not None:
            reason = f"not served by the twin: {NOT_SERVED[kind]}" if kind in NOT_SERVED else ""
            progress(logical_id, kind, f"{verb}_COMPLETE", reason)
    return Stack(stack_name, region.name, tpl, tpl.outputs())


def template_for(
    doc: dict[str, Any], region: Region, stack_name: str, parameters: dict[str, str], previous: Stack | None = None
) -> Template:
    """``doc`` as one stack in ``region`` reads it: its parameters, the region's SSM parameters and secrets."""
    return Template(
        doc,
        parameters=parameters,
        region=region.name,
        account=region.account,
        physical=dict(previous.physical) if previous else {},
        stack_name=stack_name,
        ssm=lambda name: _ssm_value(region, name),
        dynamic=lambda service, reference: _dynamic_value(region, service, reference),
    )


def _ssm_value(region: Region, name: str) -> str:
    return str(region.client("ssm").get_parameter(Name=name)["Parameter"]["Value"])


def _dynamic_value(region: Region, service: str, reference: str) -> str:
    """``{{resolve:ssm:NAME}}`` and ``{{resolve:secretsmanager:ID:SecretString:KEY}}``, read in this region."""
    if service == "ssm":
        return _ssm_value(region, reference)
    if service == "secretsmanager":
        secret_id, _, rest = reference.partition(":SecretString")
        key = rest.lstrip(":").split(":", 1)[0]
        text = str(region.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
        return str(json.loads(text)[key]) if key else text
    raise TemplateError(f"dynamic references to {service} are not served by the twin")


# ---------------------------------------------------------------------------------------------- creators
def _kms_key(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    if logical in d.template.physical:
        return d.template.physical[logical]
    meta = d.client("kms").create_key(
        Description=str(props.get("Description", logical)), Policy=json.dumps(props.get("KeyPolicy", {}))
    )["KeyMetadata"]
    if props.get("EnableKeyRotation"):
        d.client("kms").enable_key_rotation(KeyId=meta["KeyId"])
    return {"Ref": meta["KeyId"], "Arn": meta["Arn"], "KeyId": meta["KeyId"]}


def _kms_alias(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    name = str(props["AliasName"])
    if logical not in d.template.physical:
        d.client("kms").create_alias(AliasName=name, TargetKeyId=str(props["TargetKeyId"]))
    return {"Ref": name}


def _iam_role(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    iam = d.client("iam")
    name = str(props.get("RoleName") or d.name_for(logical))
    if logical not in d.template.physical:
        role = iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]), Path="/"
        )["Role"]
    else:
        role = iam.get_role(RoleName=name)["Role"]
    for policy in props.get("Policies", []):
        iam.put_role_policy(
            RoleName=name, PolicyName=str(policy["PolicyName"]), PolicyDocument=json.dumps(policy["PolicyDocument"])
        )
    for arn in props.get("ManagedPolicyArns", []):
        try:
            iam.attach_role_policy(RoleName=name, PolicyArn=str(arn))
        except iam.exceptions.NoSuchEntityException:
            if not str(arn).startswith("arn:aws:iam::aws:policy/"):
                raise
            # moto 5.2.5 ships only part of AWS's managed policies (not AmazonRDSEnhancedMonitoringRole): an AWS
            # one it lacks stays unattached in the twin, where IAM checks only what moto holds
    return {"Ref": name, "Arn": role["Arn"], "RoleId": role["RoleId"]}


def _events_rule(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    """A rule and its targets (a SAM function's Schedule and EventBridgeRule events become these)."""
    events = d.client("events")
    name = str(props.get("Name") or d.name_for(logical))
    args: dict[str, Any] = {"Name": name, "State": str(props.get("State", "ENABLED"))}
    if "ScheduleExpression" in props:
        args["ScheduleExpression"] = str(props["ScheduleExpression"])
    if "EventPattern" in props:
        pattern = props["EventPattern"]
        args["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
    if "Description" in props:
        args["Description"] = str(props["Description"])
    arn = events.put_rule(**args)["RuleArn"]
    targets = props.get("Targets") or []
    if targets:
        events.put_targets(Rule=name, **typed_for(events, "PutTargets", {"Targets": targets}))
    return {"Ref": name, "Arn": str(arn)}


def _log_group(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    name = str(props.get("LogGroupName") or f"/tandem/{d.name_for(logical)}")
    if logical not in d.template.physical:
        d.client("logs").create_log_group(logGroupName=name)
    return {"Ref": name, "Arn": f"arn:aws:logs:{d.region.name}:{d.region.account}:log-group:{name}:*"}


_QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "MaximumMessageSize",
                     "ReceiveMessageWaitTimeSeconds", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds",
                     "SqsManagedSseEnabled", "FifoQueue", "ContentBasedDeduplication")  # fmt: skip


def _sqs_queue(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    sqs = d.client("sqs")
    name = str(props.get("QueueName") or d.name_for(logical, 80))
    attrs = {k: _attribute(props[k]) for k in _QUEUE_ATTRIBUTES if k in props}
    for key in ("RedrivePolicy", "RedriveAllowPolicy"):
        if key in props:
            attrs[key] = json.dumps(props[key])
    url = sqs.create_queue(QueueName=name)["QueueUrl"]  # returns the existing queue on a redeploy
    if attrs:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}


def _attribute(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _sqs_queue_policy(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    for url in props["Queues"]:
        d.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(props["PolicyDocument"])})
    return {"Ref": d.name_for(logical)}


def _sns_topic(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    name = str(props.get("TopicName") or d.name_for(logical, 256))
    attrs = {"KmsMasterKeyId": str(props["KmsMasterKeyId"])} if "KmsMasterKeyId" in props else {}
    arn = d.client("sns").create_topic(Name=name, Attributes=attrs)["TopicArn"]
    return {"Ref": arn, "TopicArn": arn, "TopicName": name}


def _sns_topic_policy(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    for arn in props["Topics"]:
        d.client("sns").set_topic_attributes(
            TopicArn=arn, AttributeName="Policy", AttributeValue=json.dumps(props["PolicyDocument"])
        )
    return {"Ref": d.name_for(logical)}


def _sns_subscription(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    if logical in d.template.physical:
        return d.template.physical[logical]
    arn = d.client("sns").subscribe(
        TopicArn=str(props["TopicArn"]), Protocol=str(props["Protocol"]), Endpoint=str(props["Endpoint"])
    )["SubscriptionArn"]
    return {"Ref": arn}


_ALARM_KEYS = (
    "AlarmName", "AlarmDescription", "Namespace", "MetricName", "Dimensions", "Statistic", "ExtendedStatistic",
    "Period", "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData",
    "AlarmActions", "OKActions", "InsufficientDataActions", "ActionsEnabled", "Unit", "Metrics",
    "EvaluateLowSampleCountPercentile", "ThresholdMetricId",
)  # fmt: skip
_INTEGER_KEYS = {"Period", "EvaluationPeriods", "DatapointsToAlarm"}


def _alarm(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    args = {k: _typed_alarm_value(k, v) for k, v in props.items() if k in _ALARM_KEYS}
    args.setdefault("AlarmName", d.name_for(logical, 255))
    d.client("cloudwatch").put_metric_alarm(**args)
    name = str(args["AlarmName"])
    return {"Ref": name, "Arn": f"arn:aws:cloudwatch:{d.region.name}:{d.region.account}:alarm:{name}"}


def _typed_alarm_value(key: str, value: Any) -> Any:
    if key in _INTEGER_KEYS:
        return int(value)
    if key == "Threshold":
        return float(value)
    if key == "ActionsEnabled":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if key == "Metrics":
        return [_typed_metric_query(q) for q in value]
    return value


def _typed_metric_query(query: dict[str, Any]) -> dict[str, Any]:
    out = dict(query)
    if "Period" in out:
        out["Period"] = int(out["Period"])
    if "MetricStat" in out:
        out["MetricStat"] = {**out["MetricStat"], "Period": int(out["MetricStat"]["Period"])}
    if "ReturnData" in out and not isinstance(out["ReturnData"], bool):
        out["ReturnData"] = str(out["ReturnData"]).lower() == "true"
    return out


def _composite_alarm(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    keys = ("AlarmName", "AlarmRule", "AlarmDescription", "AlarmActions", "OKActions", "InsufficientDataActions",
            "ActionsEnabled")  # fmt: skip
    args = {k: _typed_alarm_value(k, v) for k, v in props.items() if k in keys}
    args.setdefault("AlarmName", d.name_for(logical, 255))
    d.client("cloudwatch").put_composite_alarm(**args)
    name = str(args["AlarmName"])
    return {"Ref": name, "Arn": f"arn:aws:cloudwatch:{d.region.name}:{d.region.account}:alarm:{name}"}


def _dashboard(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    name = str(props.get("DashboardName") or d.name_for(logical, 255))
    body = props["DashboardBody"]
    d.client("cloudwatch").put_dashboard(
        DashboardName=name, DashboardBody=body if isinstance(body, str) else json.dumps(body)
    )
    return {"Ref": name}


def _ssm_parameter(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    name = str(props.get("Name") or f"/{d.name_for(logical)}")
    value = props["Value"]
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    d.client("ssm").put_parameter(Name=name, Value=text, Type=str(props.get("Type", "String")), Overwrite=True)
    return {"Ref": name, "Type": str(props.get("Type", "String")), "Value": text}


def _secret(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    """A secret as Secrets Manager makes it: a generated string per GenerateSecretString, replicas included."""
    sm = d.client("secretsmanager")
    name = str(props.get("Name") or d.name_for(logical, 512))
    if logical in d.template.physical:
        arn = d.template.physical[logical]["Ref"]
    else:
        value = (
            str(props["SecretString"]) if "SecretString" in props else _generated_secret(props["GenerateSecretString"])
        )
        args: dict[str, Any] = {"Name": name, "SecretString": value}
        if "KmsKeyId" in props:
            args["KmsKeyId"] = str(props["KmsKeyId"])
        arn = sm.create_secret(**args)["ARN"]
    replicas = [{"Region": str(r["Region"]), **({"KmsKeyId": str(r["KmsKeyId"])} if r.get("KmsKeyId") else {})}
                for r in props.get("ReplicaRegions", [])]  # fmt: skip
    known = {r["Region"] for r in sm.describe_secret(SecretId=arn).get("ReplicationStatus", [])}
    wanted = [r for r in replicas if r["Region"] not in known]
    if wanted:
        sm.replicate_secret_to_regions(SecretId=arn, AddReplicaRegions=wanted)
    return {"Ref": arn, "Id": arn}


def _generated_secret(spec: dict[str, Any]) -> str:
    """Secrets Manager's GetRandomPassword under the spec's rules (length, excluded characters)."""
    excluded = set(str(spec.get("ExcludeCharacters", "")))
    alphabet = [c for c in string.ascii_letters + string.digits + string.punctuation if c not in excluded]
    password = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
    key = spec.get("GenerateStringKey")
    if key is None:
        return password
    template = json.loads(str(spec.get("SecretStringTemplate", "{}")))
    return json.dumps({**template, str(key): password})


def _secret_attachment(d: Deployment, _logical: str, props: dict[str, Any]) -> dict[str, str]:
    """Adds the cluster's engine, host and port to the secret, as the attachment does in AWS."""
    sm = d.client("secretsmanager")
    secret_id = str(props["SecretId"])
    value = json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])
    target = next(attrs for attrs in d.template.physical.values() if attrs.get("Ref") == props["TargetId"])
    value.update(engine="postgres", host=target["Endpoint.Address"], port=int(target["Endpoint.Port"]),
                 dbClusterIdentifier=str(props["TargetId"]))  # fmt: skip
    sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))
    return {"Ref": secret_id}


def _rotation_schedule(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    """A secret's rotation. A HostedRotationLambda (AWS's own function, deployed by the Secrets Manager transform)
    is run by the twin itself on RotateSecret (:mod:`tandem.twin.extensions.secrets_rotation`); the twin knows
    the PostgreSQL single-user kind only, and says so for any other."""
    from tandem.twin.extensions import secrets_rotation

    sm = d.client("secretsmanager")
    secret_arn = str(sm.describe_secret(SecretId=str(props["SecretId"]))["ARN"])
    hosted = props.get("HostedRotationLambda")
    if not isinstance(hosted, dict) or hosted.get("RotationType") != "PostgreSQLSingleUser":
        raise TemplateError(f"{logical}: the twin rotates with a HostedRotationLambda of RotationType "
                            "PostgreSQLSingleUser only")  # fmt: skip
    days = _rotation_days(props.get("RotationRules") or {})
    name = str(hosted.get("RotationLambdaName") or d.name_for(logical))
    function_arn = f"arn:aws:lambda:{d.region.name}:{d.region.account}:function:{name}"
    secrets_rotation.register(
        secret_arn, secrets_rotation.HostedRotation(function_arn, str(hosted.get("ExcludeCharacters", "")), days)
    )
    immediately = str(props.get("RotateImmediatelyOnUpdate", True)).lower() == "true"
    sm.rotate_secret(SecretId=secret_arn, RotationRules={"AutomaticallyAfterDays": days}, RotateImmediately=immediately)
    return {"Ref": secret_arn}


def _rotation_days(rules: dict[str, Any]) -> int:
    """RotationRules as days: AutomaticallyAfterDays, or a ScheduleExpression ``rate(N days)``."""
    if "AutomaticallyAfterDays" in rules:
        return int(rules["AutomaticallyAfterDays"])
    expression = str(rules.get("ScheduleExpression", ""))
    match = re.fullmatch(r"rate\((\d+) days?\)", expression)
    if match is None:
        raise TemplateError(f"RotationRules: the twin reads AutomaticallyAfterDays or rate(N days), not {expression!r}")
    return int(match.group(1))


def _global_cluster(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    ident = str(props.get("GlobalClusterIdentifier") or d.name_for(logical))
    if logical not in d.template.physical:
        d.client("rds").create_global_cluster(
            GlobalClusterIdentifier=ident, Engine=str(props.get("Engine", "aurora-postgresql"))
        )
    return {"Ref": ident}


def _db_cluster(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    """A member of the global database: moto's record of it, and the region's real PostgreSQL behind it."""
    ident = str(props.get("DBClusterIdentifier") or d.name_for(logical, 63)).lower()
    if d.region.databases is None:
        raise TemplateError(f"{logical}: this region has no database to back an Aurora cluster")
    host, reader_host, port = d.region.databases.attach_cluster(d.region.name, props)
    rds = d.client("rds")
    if logical not in d.template.physical:
        args: dict[str, Any] = {"DBClusterIdentifier": ident, "Engine": str(props.get("Engine", "aurora-postgresql"))}
        for key in ("GlobalClusterIdentifier", "DatabaseName", "EngineVersion", "MasterUsername"):
            if key in props:
                args[key] = str(props[key])
        if "MasterUserPassword" in props:
            args["MasterUserPassword"] = str(props["MasterUserPassword"])
        rds.create_db_cluster(**args)
    arn = rds.describe_db_clusters(DBClusterIdentifier=ident)["DBClusters"][0]["DBClusterArn"]
    return {"Ref": ident, "Endpoint.Address": host, "Endpoint.Port": str(port), "ReadEndpoint.Address": reader_host,
            "DBClusterArn": arn, "DBClusterResourceId": f"cluster-{ident}"}  # fmt: skip


def _global_table(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    """The table in this region, then a replica in every other region the template lists (the replicator's job)."""
    ddb = d.client("dynamodb")
    name = str(props.get("TableName") or d.name_for(logical, 255))
    if logical not in d.template.physical:
        args: dict[str, Any] = {
            "TableName": name, "AttributeDefinitions": props["AttributeDefinitions"], "KeySchema": props["KeySchema"],
            "BillingMode": str(props.get("BillingMode", "PAY_PER_REQUEST")),
        }  # fmt: skip
        if "StreamSpecification" in props:
            args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in props:
                args[key] = props[key]
        ddb.create_table(**args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                "AttributeName": str(ttl["AttributeName"]), "Enabled": bool(ttl.get("Enabled", True))})  # fmt: skip
    table = ddb.describe_table(TableName=name)["Table"]
    have = {r["RegionName"] for r in table.get("Replicas", [])} | {d.region.name}
    for replica in props.get("Replicas", []):
        if str(replica["Region"]) not in have:
            ddb.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": str(replica["Region"])}}])
    return {"Ref": name, "Arn": table["TableArn"], "StreamArn": str(table.get("LatestStreamArn", ""))}


def _bucket(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    s3 = d.client("s3")
    if logical in d.template.physical:
        name = d.template.physical[logical]["Ref"]
    else:  # a generated name ends in a random part, as CloudFormation's does: bucket names are global
        name = str(props.get("BucketName") or f"{d.name_for(logical, 50).lower()}-{_random_suffix()}")
    if logical not in d.template.physical:
        config = (
            {} if d.region.name == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": d.region.name}}
        )
        s3.create_bucket(Bucket=name, **config)
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": str(props["VersioningConfiguration"]["Status"])}
        )
    if "PublicAccessBlockConfiguration" in props:
        block = typed_for(
            s3, "PutPublicAccessBlock", {"PublicAccessBlockConfiguration": props["PublicAccessBlockConfiguration"]}
        )
        s3.put_public_access_block(Bucket=name, **block)
    if "LifecycleConfiguration" in props:
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={
            "Rules": [_api_keys(_lifecycle_rule(r)) for r in props["LifecycleConfiguration"]["Rules"]]})  # fmt: skip
    replication = props.get("ReplicationConfiguration")
    if replication:
        s3.put_bucket_replication(Bucket=name, ReplicationConfiguration={
            "Role": str(replication["Role"]), "Rules": [_api_keys(r) for r in replication["Rules"]]})  # fmt: skip
    return {"Ref": name, "Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{d.region.name}.amazonaws.com"}  # fmt: skip


def _random_suffix(length: int = 12) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape -> the API's (CloudFormation flattens days into its own keys)."""
    out: dict[str, Any] = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        out["Id"] = rule["Id"]
    expiration = {api: rule[cfn] for cfn, api in (("ExpirationInDays", "Days"), ("ExpirationDate", "Date"),
                  ("ExpiredObjectDeleteMarker", "ExpiredObjectDeleteMarker")) if cfn in rule}  # fmt: skip
    if expiration:
        out["Expiration"] = expiration
    transitions = [*rule.get("Transitions", []), *([rule["Transition"]] if "Transition" in rule else [])]
    if transitions:
        out["Transitions"] = [
            {"StorageClass": t["StorageClass"], **({"Days": t["TransitionInDays"]} if "TransitionInDays" in t else {}),
             **({"Date": t["TransitionDate"]} if "TransitionDate" in t else {})}
            for t in transitions
        ]  # fmt: skip
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = rule["NoncurrentVersionExpiration"]
    elif "NoncurrentVersionExpirationInDays" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["NoncurrentVersionExpirationInDays"]}
    if "NoncurrentVersionTransitions" in rule:
        out["NoncurrentVersionTransitions"] = [
            {"StorageClass": t["StorageClass"], "NoncurrentDays": t["TransitionInDays"]}
            for t in rule["NoncurrentVersionTransitions"]
        ]
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return out


def typed_for(client: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with CloudFormation's scalars typed as the API's model wants them: a template (and a
    parameter) gives ``"true"`` and ``"42"`` where the API takes a boolean and an integer; CloudFormation
    converts by the resource's schema, the twin by botocore's model of the operation it calls."""
    shape = client.meta.service_model.operation_model(operation).input_shape
    return {k: _typed(shape.members[k], v) if k in shape.members else v for k, v in params.items()}


def _typed(shape: Any, value: Any) -> Any:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: _typed(shape.members[k], v) if k in shape.members else v for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_typed(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _typed(shape.value, v) for k, v in value.items()}
    if isinstance(value, str):
        if kind == "boolean" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind in ("integer", "long") and value.lstrip("-").isdigit():
            return int(value)
        if kind in ("double", "float"):
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _api_keys(value: Any) -> Any:
    """CloudFormation spells the S3 rule id ``Id``, the API ``ID``; numbers arrive as strings."""
    if isinstance(value, list):
        return [_api_keys(v) for v in value]
    if not isinstance(value, dict):
        return int(value) if isinstance(value, str) and value.isdigit() else value
    return {("ID" if k == "Id" else k): (_api_keys(v) if k != "Prefix" else v) for k, v in value.items()}


def _bucket_policy(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    d.client("s3").put_bucket_policy(Bucket=str(props["Bucket"]), Policy=json.dumps(props["PolicyDocument"]))
    return {"Ref": d.name_for(logical)}


def _health_check(d: Deployment, logical: str, props: dict[str, Any]) -> dict[str, str]:
    if logical in d.template.physical:
        return d.template.physical[logical]
    config = _api_keys(props["HealthCheckConfig"])
    check = d.client("route53").create_health_check(CallerReference=d.name_for(logical), HealthCheckConfig=config)
    return {"Ref": check["HealthCheck"]["Id"], "HealthCheckId": check["HealthCheck"]["Id"]}


def _record_set(d: Deployment, _logical: str, props: dict[str, Any]) -> dict[str, str]:
    record = {
        k: (_api_keys(v) if k != "Name" else v)
        for k, v in props.items()
        if k not in {"HostedZoneId", "HostedZoneName", "Comment"}
    }
    if "TTL" in record:
        record["TTL"] = int(record["TTL"])
    record["ResourceRecords"] = [{"Value": str(v)} for v in props.get("ResourceRecords", [])]
    d.client("route53").change_resource_record_sets(
        HostedZoneId=str(props["HostedZoneId"]),
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]},
    )
    return {"Ref": str(props["Name"])}


#: a custom resource's own type; ``Custom::<Name>`` types are served by its creator too
CUSTOM_RESOURCE = "AWS::CloudFormation::CustomResource"

#: Types the twin does not serve, with the reason (they get a placeholder physical id).
NOT_SERVED: dict[str, str] = {
    "AWS::EC2::VPC": "no network in the twin: workers reach every endpoint on loopback",
    "AWS::EC2::Subnet": "no network in the twin",
    "AWS::EC2::RouteTable": "no network in the twin",
    "AWS::EC2::SubnetRouteTableAssociation": "no network in the twin",
    "AWS::EC2::VPCEndpoint": "no network in the twin",
    "AWS::EC2::SecurityGroup": "no network in the twin",
    "AWS::EC2::SecurityGroupEgress": "no network in the twin",
    "AWS::EC2::FlowLog": "no network in the twin",
    "AWS::Backup::BackupVault": "no backups in the twin",
    "AWS::Backup::BackupPlan": "no backups in the twin",
    "AWS::Backup::BackupSelection": "no backups in the twin",
    "AWS::RDS::DBInstance": "the region's PostgreSQL server is the cluster's one instance",
    "AWS::RDS::DBSubnetGroup": "no network in the twin",
    "AWS::RDS::DBClusterParameterGroup": "the twin's PostgreSQL runs with TLS on, as rds.force_ssl requires",
    "AWS::ApiGatewayV2::DomainName": "custom domains need DNS and certificates the twin does not have",
    "AWS::ApiGatewayV2::ApiMapping": "custom domains need DNS and certificates the twin does not have",
}

CREATORS: dict[str, Creator] = {
    "AWS::KMS::Key": _kms_key,
    "AWS::KMS::Alias": _kms_alias,
    "AWS::IAM::Role": _iam_role,
    "AWS::Logs::LogGroup": _log_group,
    "AWS::Events::Rule": _events_rule,
    "AWS::SQS::Queue": _sqs_queue,
    "AWS::SQS::QueuePolicy": _sqs_queue_policy,
    "AWS::SNS::Topic": _sns_topic,
    "AWS::SNS::TopicPolicy": _sns_topic_policy,
    "AWS::SNS::Subscription": _sns_subscription,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::CloudWatch::CompositeAlarm": _composite_alarm,
    "AWS::CloudWatch::Dashboard": _dashboard,
    "AWS::SSM::Parameter": _ssm_parameter,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::SecretsManager::SecretTargetAttachment": _secret_attachment,
    "AWS::SecretsManager::RotationSchedule": _rotation_schedule,
    "AWS::RDS::GlobalCluster": _global_cluster,
    "AWS::RDS::DBCluster": _db_cluster,
    "AWS::DynamoDB::GlobalTable": _global_table,
    "AWS::S3::Bucket": _bucket,
    "AWS::S3::BucketPolicy": _bucket_policy,
    "AWS::Route53::HealthCheck": _health_check,
    "AWS::Route53::RecordSet": _record_set,
}

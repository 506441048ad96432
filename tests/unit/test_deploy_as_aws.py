"""The defects a real deploy would hit, each checked the way AWS sees the templates: through samconfig.toml
as ``sam deploy`` reads it, and through AWS's own SAM transform (``aws-sam-translator``), not our reading."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.sam.transform import TransformError, translate, with_code_at
from tandem.template import APP_TEMPLATE, load, samconfig_envs, samconfig_parameters
from tandem.twin.change_sets import TEMPLATE_BODY_LIMIT, TEMPLATE_URL_LIMIT


def _translated(env: str = "primary", **overrides: str) -> dict[str, Any]:
    config = samconfig_parameters(env)
    doc = load(APP_TEMPLATE)
    functions = [k for k, r in doc["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    packaged = with_code_at(doc, {k: f"s3://tandem-artifacts/{config.stack_name}/{k}" for k in functions})
    return translate(packaged, {**config.parameters, **overrides}, region=config.region, account="111122223333")


@pytest.fixture(scope="module")
def app() -> dict[str, Any]:
    return _translated()


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


@pytest.mark.parametrize("env", samconfig_envs())
def test_a_template_over_the_body_limit_is_deployed_from_s3(env: str) -> None:
    """Defect 1: SAM CLI stops before CloudFormation when a template over 51,200 bytes has no bucket."""
    config = samconfig_parameters(env)
    size = config.template_file.stat().st_size
    assert size < TEMPLATE_URL_LIMIT
    if size > TEMPLATE_BODY_LIMIT:
        assert config.resolve_s3 or config.s3_bucket, f"{env}: {size} bytes and neither resolve_s3 nor s3_bucket"


def test_every_route_lives_in_the_api_definition(app: dict[str, Any]) -> None:
    """Defect 4: API Gateway re-imports an HTTP API's definition on every update and drops routes that are
    not in it; POST /transactions must be in the body SAM generates, beside SAM's own /health."""
    api = app["Resources"]["IngressApi"]
    assert api["Type"] == "AWS::ApiGatewayV2::Api"
    paths = api["Properties"]["Body"]["paths"]
    post = paths["/transactions"]["post"]
    condition, intake, integration = post["x-amazon-apigateway-integration"]["Fn::If"]  # CloudFormation decides
    assert condition == "IsDurableIngress"
    assert (intake["type"], intake["payloadFormatVersion"]) == ("aws_proxy", "2.0")
    assert "TransactionIntakeFunction.Arn" in str(intake["uri"])
    assert integration["integrationSubtype"] == "SQS-SendMessage"
    assert integration["requestParameters"] == {"QueueUrl": {"Ref": "TransactionQueue"}, "MessageBody": "$request.body"}
    assert integration["credentials"] == intake["credentials"] == {"Fn::GetAtt": ["IngressRole", "Arn"]}
    assert post["security"] == [{"AWS_IAM": []}]  # producers sign (SigV4)
    schemes = api["Properties"]["Body"]["components"]["securitySchemes"]
    assert schemes["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    health = paths["/health"]["get"]
    assert "security" not in health  # Route53's checkers do not sign
    assert "RegionHealthFunction.Arn" in str(health["x-amazon-apigateway-integration"]["uri"])
    beside = [*_of_type(app, "AWS::ApiGatewayV2::Route"), *_of_type(app, "AWS::ApiGatewayV2::Integration")]
    assert beside == []


def test_the_ingress_role_trusts_api_gateway_without_keys_it_does_not_send(app: dict[str, Any]) -> None:
    """Defect 5: API Gateway sets no aws:SourceAccount/aws:SourceArn when it assumes integration credentials;
    a trust conditioned on them answers every POST with 500. The role's power stays one queue and its key, and
    the intake function when the durable ingress is on."""
    role = app["Resources"]["IngressRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert "Condition" not in trust
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    *always, conditional = statements
    assert {a for st in always for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])} == {
        "sqs:SendMessage", "kms:GenerateDataKey", "kms:Decrypt",
    }  # fmt: skip
    condition, invoke, otherwise = conditional["Fn::If"]
    assert (condition, invoke["Action"], otherwise) == (
        "IsDurableIngress",
        "lambda:InvokeFunction",
        {"Ref": "AWS::NoValue"},
    )
    assert invoke["Resource"] == {"Fn::GetAtt": ["TransactionIntakeFunction", "Arn"]}


def test_each_function_gets_its_own_role_from_the_transform(app: dict[str, Any]) -> None:
    """What the twin must serve: SAM makes a role per function with the statements that function declares."""
    functions = _of_type(app, "AWS::Lambda::Function")
    roles = {str(f["Properties"]["Role"]["Fn::GetAtt"][0]) for f in functions.values()}
    assert len(roles) == len(functions) == 7
    assert all(app["Resources"][r]["Type"] == "AWS::IAM::Role" for r in roles)


def test_the_transform_refuses_what_cloudformation_would(app: dict[str, Any]) -> None:
    """A template the transform cannot read fails with the transform's own reason, as a change set does."""
    doc = load(APP_TEMPLATE)
    doc["Resources"]["Broken"] = {"Type": "AWS::Serverless::Function", "Properties": {"Handler": "x.y"}}
    functions = [k for k, r in doc["Resources"].items() if r["Type"] == "AWS::Serverless::Function" and k != "Broken"]
    packaged = with_code_at(doc, {k: f"s3://b/{k}" for k in functions})
    with pytest.raises(TransformError, match=r"Resource with id \[Broken\] is invalid"):
        translate(packaged, samconfig_parameters("primary").parameters, region="us-east-1", account="111122223333")
    assert app["Resources"]  # the good template still translates (refusals are not cached)


@pytest.mark.parametrize("function", ["TransactionProcessorFunction", "ReplicationMonitorAuroraFunction"])
def test_every_ledger_connection_verifies_the_server(app: dict[str, Any], function: str) -> None:
    """Defect 9: ``sslmode=require`` encrypts but lets anything on the path pose as the database. In AWS the
    functions verify against the RDS roots shipped with the code (no LEDGER_DB_SSLROOTCERT); the twin gives
    its own CA through LedgerDbRootCert, so the same verify-full path runs there."""
    variables = app["Resources"][function]["Properties"]["Environment"]["Variables"]
    assert variables["LEDGER_DB_SSLMODE"] == "verify-full"
    assert variables["LEDGER_DB_SSLROOTCERT"] == {
        "Fn::If": ["HasLedgerDbRootCert", {"Ref": "LedgerDbRootCert"}, {"Ref": "AWS::NoValue"}]
    }
    assert app["Parameters"]["LedgerDbRootCert"]["Default"] == ""


def test_the_shipped_rds_roots_are_aws_root_cas_for_every_region_we_deploy_to() -> None:
    import datetime

    from cryptography import x509

    from tandem_core.database import RDS_ROOTS, rds_roots

    certificates = x509.load_pem_x509_certificates(RDS_ROOTS.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    assert len(certificates) >= 81  # three roots (RSA2048, RSA4096, ECC384) for each of 27 regions
    for cert in certificates:
        assert cert.issuer == cert.subject  # a root
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.not_valid_after_utc > now
        assert "Amazon RDS" in cert.subject.rfc4514_string()
    for env in ("primary", "dr"):
        region = samconfig_parameters(env).region
        mine = x509.load_pem_x509_certificates(rds_roots(region).encode())
        names = sorted(str(c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value) for c in mine)
        assert names == [f"Amazon RDS {region} Root CA {kind} G1" for kind in ("ECC384", "RSA2048", "RSA4096")]
    assert len(x509.load_pem_x509_certificates(rds_roots("xx-nowhere-1").encode())) == len(certificates)


def _processor_version(template: dict[str, Any]) -> str:
    (version,) = [
        k for k, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Version" and k.startswith("TransactionProcessorFunctionVersion")
    ]  # fmt: skip
    return str(version)


def test_snapstart_or_an_ssm_value_alone_publishes_no_version_without_the_key(app: dict[str, Any]) -> None:
    """Defect 8, as AWS's transform shows it: SAM hashes the code and the template as written, so toggling
    ProcessorSnapStart (or a new value behind an SSM-typed parameter) keeps the Version's logical id: nothing
    is published and "live" stays on the old version. ProcessorVersionKey decides instead when it is given."""
    toggled = _translated(ProcessorSnapStart="enabled")
    assert _processor_version(toggled) == _processor_version(app)  # the defect, without a key
    keyed = _translated(ProcessorVersionKey="0123456789abcdef")
    rekeyed = _translated(ProcessorVersionKey="fedcba9876543210")
    assert len({_processor_version(app), _processor_version(keyed), _processor_version(rekeyed)}) == 3
    alias = keyed["Resources"]["TransactionProcessorFunctionAliaslive"]["Properties"]
    assert alias["FunctionVersion"] == {"Fn::GetAtt": [_processor_version(keyed), "Version"]}


def test_the_version_key_follows_every_value_the_processor_is_deployed_with(aws_env: None) -> None:
    import boto3
    from moto import mock_aws

    from tandem.deploy.version import version_key

    doc = load(APP_TEMPLATE)
    params = dict(samconfig_parameters("primary").parameters)
    with mock_aws():
        ssm = boto3.client("ssm", region_name="us-east-1")
        for key, spec in doc["Parameters"].items():
            if str(spec["Type"]).startswith("AWS::SSM::Parameter::Value") and key in params:
                ssm.put_parameter(Name=params[key], Value=f"value-of-{key}", Type="String")
        region = ssm  # the stack's region reads the SSM values
        code = {"TransactionProcessorFunction": "s3://b/code-1.zip"}
        base = version_key(region, doc, params, code)
        assert version_key(region, doc, params, code) == base
        assert version_key(region, doc, {**params, "ProcessorSnapStart": "enabled"}, code) != base
        assert version_key(region, doc, params, {"TransactionProcessorFunction": "s3://b/code-2.zip"}) != base
        ssm.put_parameter(Name=params["LedgerDbHost"], Value="another-writer", Type="String", Overwrite=True)
        assert version_key(region, doc, params, code) != base

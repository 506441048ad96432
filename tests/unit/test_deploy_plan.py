"""`tandem deploy`'s plan: the order, what each step computes from the stacks' outputs, and what it refuses
before changing anything (against moto in-process: Route53, ACM, SSM as the plan reads them)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from tandem.cli import main
from tandem.deploy.plan import ORDER, PlanRefused, check, make_plan, parameters
from tandem.template import ROOT, SAMCONFIG, load

PRIMARY, DR = "us-east-1", "us-west-2"
RECORD = "txn.example.com"


class Moto:
    """The account the plan's checks read: boto3 clients of moto's in-process AWS."""

    def __init__(self, requires_custom_domain: bool = True) -> None:
        self.requires_custom_domain = requires_custom_domain

    def client(self, region: str, service: str) -> Any:
        return boto3.client(service, region_name=region)


def write_config(directory: Path, additions: dict[str, list[str]]) -> Path:
    """samconfig.toml as shipped, with ``KEY=VALUE`` lines added to some envs' parameter_overrides, beside
    the repository's templates (an env's template is read relative to its config file, as SAM CLI reads it)."""
    lines = SAMCONFIG.read_text(encoding="utf-8").splitlines()
    out, env, in_list = [], None, False
    for line in lines:
        if line.startswith("[") and line.endswith(".deploy.parameters]"):
            env = line[1 : -len(".deploy.parameters]")]
        in_list = in_list or line.startswith("parameter_overrides = [")
        if in_list and line == "]":
            out += [f'  "{item}",' for item in additions.get(str(env), [])]  # last: they win, as in SAM CLI
            in_list = False
        out.append(line)
    (directory / "template.yaml").symlink_to(ROOT / "template.yaml")
    (directory / "infra_global").symlink_to(ROOT / "infra_global")
    path = directory / "samconfig.toml"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def certificate(region: str, name: str) -> str:
    """An ISSUED certificate for ``name`` in ``region`` (imported, as ACM holds it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    acm = boto3.client("acm", region_name=region)
    return str(acm.import_certificate(Certificate=cert.public_bytes(serialization.Encoding.PEM), PrivateKey=pem)[
        "CertificateArn"])  # fmt: skip


@pytest.fixture
def aws(aws_env: None) -> Iterator[dict[str, str]]:
    """A hosted zone for example.com and a certificate for the failover name in each region."""
    with mock_aws():
        zone = boto3.client("route53").create_hosted_zone(Name="example.com.", CallerReference="tandem")
        yield {
            "zone": str(zone["HostedZone"]["Id"]).rsplit("/", 1)[-1],
            PRIMARY: certificate(PRIMARY, RECORD),
            DR: certificate(DR, RECORD),
        }


def armed_config(tmp_path: Path, aws: dict[str, str], **extra: list[str]) -> Path:
    additions = {
        "global-primary": [f"HostedZoneId={aws['zone']}", f"RecordName={RECORD}"],
        "primary": [f"IngressDomainName={RECORD}", f"IngressCertificateArn={aws[PRIMARY]}"],
        "dr": [f"IngressDomainName={RECORD}", f"IngressCertificateArn={aws[DR]}"],
    }
    for env, items in extra.items():
        additions[env.replace("_", "-")] = [*additions.get(env.replace("_", "-"), []), *items]
    return write_config(tmp_path, additions)


# ------------------------------------------------------------------------------------------------ the order
def test_the_plan_deploys_in_the_order_the_templates_need_and_ends_by_arming_failover() -> None:
    plan = make_plan()
    assert [(s.env, s.region) for s in plan.steps] == [
        ("global-secondary", DR), ("global-primary", PRIMARY), ("global-secondary", DR),
        ("primary", PRIMARY), ("dr", DR), ("global-primary", PRIMARY), ("primary", PRIMARY), ("dr", DR),
    ]  # fmt: skip
    assert [s.env for s in plan.steps] == [env for env, _ in ORDER]
    assert "arms automatic failover" in plan.steps[-2].why
    assert "witness" in plan.steps[-1].why
    assert plan.step_of("global-primary").template == (ROOT / "infra_global" / "template.yaml")
    assert plan.step_of("dr").stack == "tandem-app-dr"


PRIMARY_CHECK, DR_CHECK = "0f0e0d0c-0000-4000-8000-00000000000a", "0f0e0d0c-0000-4000-8000-00000000000b"


def _outputs_after(done: set[str]) -> Any:
    """The stacks' outputs once the envs in ``done`` exist (as DescribeStacks would give them)."""
    outputs = {
        "global-secondary": {"DataKeyArn": "arn:aws:kms:us-west-2:111122223333:key/dr"},
        "global-primary": {"DataKeyArn": "arn:aws:kms:us-east-1:111122223333:key/primary",
                           "LedgerDbSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:ledger",
                           "PrimaryEndpointHealthCheckId": PRIMARY_CHECK, "DrEndpointHealthCheckId": DR_CHECK},
        "primary": {"IngressApiEndpoint": "https://p1.execute-api.us-east-1.amazonaws.com",
                    "IngressHealthCheckDomain": "p1.execute-api.us-east-1.amazonaws.com",
                    "IngressRegionalDomain": "d-p1.execute-api.us-east-1.amazonaws.com"},
        "dr": {"IngressApiEndpoint": "https://d2.execute-api.us-west-2.amazonaws.com",
               "IngressHealthCheckDomain": "d2.execute-api.us-west-2.amazonaws.com",
               "IngressRegionalDomain": "d-d2.execute-api.us-west-2.amazonaws.com"},
    }  # fmt: skip
    return lambda env: outputs[env] if env in done else None


def test_each_step_computes_its_inputs_from_the_outputs_of_the_stacks_before_it() -> None:
    plan = make_plan(site={"global-primary": {"HostedZoneId": "ZTANDEM", "RecordName": RECORD}})
    done: set[str] = set()
    seen = []
    for step in plan.steps:
        seen.append(parameters(plan, step.env, _outputs_after(done)))
        done.add(step.env)
    first_secondary, primary_data, second_secondary, app_primary, app_dr, dns, armed, witness = seen
    assert "PeerDataKeyArn" not in first_secondary  # REPLACE-ME in samconfig is never passed
    assert primary_data["PeerDataKeyArn"].endswith(":key/dr")
    assert "HostedZoneId" not in primary_data  # the DNS inputs go together, once both apps exist
    assert second_secondary["PrimaryLedgerDbSecretArn"].endswith(":secret:ledger")
    assert "PeerHealthUrl" not in app_primary  # DR's ingress does not exist yet
    assert app_dr["PeerHealthUrl"] == "https://p1.execute-api.us-east-1.amazonaws.com/health"
    assert dns["HostedZoneId"] == "ZTANDEM"
    assert dns["PrimaryIngressDomain"] == "d-p1.execute-api.us-east-1.amazonaws.com"
    assert dns["DrHealthCheckDomain"] == "d2.execute-api.us-west-2.amazonaws.com"
    assert armed["PeerHealthUrl"] == "https://d2.execute-api.us-west-2.amazonaws.com/health"
    assert armed["PeerEndpointHealthCheckId"] == DR_CHECK  # Route53's view of the peer: each handler's witness
    assert witness["PeerEndpointHealthCheckId"] == PRIMARY_CHECK
    assert witness["PeerHealthUrl"] == app_dr["PeerHealthUrl"]
    assert {s["PeerRegion"] for s in (first_secondary, app_primary, dns)} == {PRIMARY, DR}


def test_a_second_run_passes_each_stack_its_final_values_at_its_first_step() -> None:
    """Every step of an env computes the same values once all stacks exist: a second run changes nothing."""
    plan = make_plan(site={"global-primary": {"HostedZoneId": "ZTANDEM", "RecordName": RECORD}})
    everything = _outputs_after({"global-secondary", "global-primary", "primary", "dr"})
    for env in ("global-secondary", "global-primary", "primary", "dr"):
        runs = [parameters(plan, s.env, everything) for s in plan.steps if s.env == env]
        assert len(runs) == 2
        assert runs[0] == runs[1]


def test_a_peer_app_of_an_older_template_leaves_the_health_url_to_the_arming_step() -> None:
    """Upgrading: DR's stack predates the IngressApiEndpoint output; step 4 must not stop half-way for it."""
    plan = make_plan()
    older_dr = {"IngressHealthCheckDomain": "d2.execute-api.us-west-2.amazonaws.com"}
    values = parameters(plan, "primary", lambda env: older_dr if env == "dr" else None)
    assert "PeerHealthUrl" not in values


def test_regions_of_a_twin_replace_samconfigs() -> None:
    plan = make_plan(regions={"primary": "eu-west-1", "dr": "eu-central-1"})
    assert {s.region for s in plan.steps if s.env in ("primary", "global-primary")} == {"eu-west-1"}
    assert parameters(plan, "primary", lambda env: None)["PeerRegion"] == "eu-central-1"


# ------------------------------------------------------------------------------------------------ refusals
def test_the_shipped_samconfig_is_refused_for_aws_until_the_hosted_zone_is_given(aws: dict[str, str]) -> None:
    with pytest.raises(PlanRefused, match=r"\[global-primary\]: HostedZoneId and RecordName are not set"):
        check(make_plan(), Moto())


def test_a_complete_config_passes_the_checks(tmp_path: Path, aws: dict[str, str]) -> None:
    check(make_plan(armed_config(tmp_path, aws)), Moto())


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ({"dr": ["AlarmEmail=REPLACE-ME@example.com"]}, r"\[dr\]: AlarmEmail is still REPLACE-ME"),
        ({"primary": ["NoSuchParameter=1"]}, r"NoSuchParameter is not a parameter of template.yaml"),
        ({"primary": ["LedgerTableName=/tandem/primary/no-such-name"]}, r"no such SSM parameter in us-east-1"),
    ],
)
def test_inputs_that_would_fail_half_way_are_refused_first(
    tmp_path: Path, aws: dict[str, str], extra: dict[str, list[str]], refusal: str
) -> None:
    with pytest.raises(PlanRefused, match=refusal):
        check(make_plan(armed_config(tmp_path, aws, **extra)), Moto())


def test_a_hosted_zone_that_does_not_exist_is_refused(tmp_path: Path, aws: dict[str, str]) -> None:
    config = armed_config(tmp_path, {**aws, "zone": "ZNOSUCHZONE1"})
    with pytest.raises(PlanRefused, match=r"hosted zone ZNOSUCHZONE1 \(HostedZoneId\): NoSuchHostedZone"):
        check(make_plan(config), Moto())


def test_a_record_outside_the_zone_is_refused(tmp_path: Path, aws: dict[str, str]) -> None:
    config = write_config(tmp_path, {"global-primary": [f"HostedZoneId={aws['zone']}", "RecordName=txn.other.org"]})
    with pytest.raises(PlanRefused, match=r"must be a name below the zone example\.com"):
        check(make_plan(config), Moto())


def test_a_missing_or_wrong_certificate_is_refused(tmp_path: Path, aws: dict[str, str]) -> None:
    a, b, c = (tmp_path / d for d in "abc")
    for directory in (a, b, c):
        directory.mkdir()
    swapped = {**aws, DR: aws[PRIMARY]}  # the primary region's certificate named in DR: ACM has no such ARN there
    with pytest.raises(PlanRefused, match=r"\[dr\] certificate .* in us-west-2: ResourceNotFoundException"):
        check(make_plan(armed_config(a, swapped)), Moto())
    other = {**aws, PRIMARY: certificate(PRIMARY, "api.example.com")}
    with pytest.raises(PlanRefused, match=r"is for api.example.com, not txn.example.com"):
        check(make_plan(armed_config(b, other)), Moto())
    no_certificate = write_config(c, {"global-primary": [f"HostedZoneId={aws['zone']}", f"RecordName={RECORD}"]})
    with pytest.raises(PlanRefused, match=r"\[primary\]: IngressDomainName and IngressCertificateArn are not both"):
        check(make_plan(no_certificate), Moto())
    check(make_plan(no_certificate), Moto(requires_custom_domain=False))  # the twin: loopback HTTP, no TLS


def test_the_app_template_names_the_output_the_peer_health_url_is_computed_from() -> None:
    outputs = load(ROOT / "template.yaml")["Outputs"]
    assert outputs["IngressApiEndpoint"]["Value"] == {"Fn::GetAtt": ["IngressApi", "ApiEndpoint"]}


def test_tandem_deploy_refuses_in_one_line_and_changes_nothing(
    aws: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's command on the shipped samconfig.toml: exit 2, one line, no stack created."""
    assert main(["deploy", "--target", "aws"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("tandem deploy: samconfig.toml [global-primary]: HostedZoneId and RecordName are not set")
    for region in (PRIMARY, DR):
        assert boto3.client("cloudformation", region_name=region).describe_stacks()["Stacks"] == []


def test_tandem_doctor_on_an_account_without_the_stacks_is_not_armed_and_says_to_deploy(
    aws: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--target", "aws", "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert {f["check"] for f in findings if not f["ok"]} >= {"app stack", "route53"}
    assert {f["fix"] for f in findings if not f["ok"] and f["check"] in ("app stack", "route53")} == {
        "run tandem deploy"
    }

"""tandem.template: the one resolver the twin provisions from and the tests read templates through.

Each intrinsic, parameter type and hook on small templates; then both real templates resolved for every
samconfig env, so an intrinsic the resolver does not know fails here before it fails a twin deployment.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.template import (
    APP_TEMPLATE,
    GLOBAL_TEMPLATE,
    SamConfig,
    Template,
    TemplateError,
    load,
    loads,
    parse_parameter_overrides,
    samconfig_envs,
    samconfig_parameters,
)

ACCOUNT = "111122223333"

BASE = """
Parameters:
  Env: {Type: String, Default: prod, AllowedValues: [prod, test]}
  Flag: {Type: String, Default: "true"}
  Port: {Type: Number, Default: 5432, MinValue: 1, MaxValue: 65535}
  Empty: {Type: String, Default: ""}
  Zones: {Type: CommaDelimitedList, Default: "a, b ,c"}
Mappings:
  Sizes:
    prod: {Small: s-prod, Large: l-prod}
    test: {Small: s-test, Large: l-test}
  Pick:
    size: {prod: Large, test: Small}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsTest: !Not [!Condition IsProd]
  FlagOn: !Equals [!Ref Flag, true]
  Both: !And [!Condition IsProd, !Condition FlagOn]
  Either: !Or [!Condition IsTest, !Equals [!Ref Empty, ""]]
Resources:
  Queue: {Type: AWS::SQS::Queue}
  Db:
    Type: AWS::RDS::DBCluster
    Condition: IsProd
  TestOnly:
    Type: AWS::SNS::Topic
    Condition: IsTest
Outputs:
  QueueArn: {Value: !GetAtt Queue.Arn}
  DbHost:
    Condition: IsProd
    Value: !GetAtt Db.Endpoint.Address
  TopicName:
    Condition: IsTest
    Value: !Ref TestOnly
"""

PHYSICAL = {
    "Queue": {"Ref": "https://sqs/q", "Arn": "arn:aws:sqs:us-east-1:111122223333:q", "QueueName": "q"},
    "Db": {"Ref": "db-1", "Endpoint.Address": "db.example", "Endpoint.Port": "5432"},
}


def tpl(text: str = BASE, **kwargs: Any) -> Template:
    kwargs.setdefault("account", ACCOUNT)
    return Template(loads(text), **kwargs)


def with_params(params: str, **kwargs: Any) -> Template:
    return tpl(f"Parameters:\n{params}\nResources: {{}}\n", **kwargs)


# ---------------------------------------------------------------- Ref and pseudo parameters


def test_ref_reads_parameters_defaults_and_given_values() -> None:
    t = tpl(parameters={"Env": "test"})
    assert t.resolve({"Ref": "Env"}) == "test"
    assert t.resolve({"Ref": "Flag"}) == "true"
    assert t.parameter("Zones") == "a,b,c"


def test_pseudo_parameters() -> None:
    t = tpl(region="eu-west-1", stack_name="tandem-app-primary")
    names = ("Region", "AccountId", "StackName", "Partition", "URLSuffix")
    assert [t.resolve({"Ref": f"AWS::{n}"}) for n in names] == [
        "eu-west-1", ACCOUNT, "tandem-app-primary", "aws", "amazonaws.com",
    ]  # fmt: skip
    stack_id = t.resolve({"Ref": "AWS::StackId"})
    prefix = f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/tandem-app-primary/"
    assert re.fullmatch(rf"{re.escape(prefix)}[0-9a-f-]{{36}}", stack_id)
    assert stack_id == t.resolve({"Ref": "AWS::StackId"})  # stable for one stack
    assert t.resolve({"Ref": "AWS::NotificationARNs"}) == []
    china = tpl(region="cn-north-1")
    assert (china.resolve({"Ref": "AWS::Partition"}), china.resolve({"Ref": "AWS::URLSuffix"})) == (
        "aws-cn",
        "amazonaws.com.cn",
    )
    assert tpl().resolve({"Ref": "AWS::StackName"}) == "tandem-local-us-east-1"  # no stack name given
    with pytest.raises(TemplateError, match="AWS::Nope"):
        t.resolve({"Ref": "AWS::Nope"})


def test_ref_and_getatt_of_resources_read_what_provisioning_recorded() -> None:
    t = tpl(physical=PHYSICAL)
    assert t.resolve({"Ref": "Queue"}) == "https://sqs/q"
    assert t.resolve({"Fn::GetAtt": ["Queue", "Arn"]}) == PHYSICAL["Queue"]["Arn"]
    assert t.resolve({"Fn::GetAtt": "Db.Endpoint.Address"}) == "db.example"  # JSON string form
    assert t.resolve(loads("Resources: {}\nX: !GetAtt Db.Endpoint.Port\n")["X"]) == "5432"  # YAML short form
    assert t.resolve({"Fn::GetAtt": ["Queue", {"Fn::Join": ["", ["Queue", "Name"]]}]}) == "q"


def test_unresolvable_references_say_why() -> None:
    t = tpl(parameters={"Env": "test"}, physical=PHYSICAL)
    with pytest.raises(TemplateError, match=r"NoSuchThing.*neither a parameter nor a resource"):
        t.resolve({"Ref": "NoSuchThing"})
    with pytest.raises(TemplateError, match=r"TestOnly is not provisioned"):
        t.resolve({"Ref": "TestOnly"})
    with pytest.raises(TemplateError, match=r"Queue\.Missing: provisioning recorded no such attribute"):
        t.resolve({"Fn::GetAtt": ["Queue", "Missing"]})
    inactive = tpl(parameters={"Env": "test"})
    with pytest.raises(TemplateError, match=r"Db is not created \(condition IsProd is false\)"):
        inactive.resolve({"Fn::GetAtt": ["Db", "Endpoint.Address"]})


# ---------------------------------------------------------------- Fn::Sub


def test_sub_both_forms_with_parameters_pseudo_parameters_and_resource_attributes() -> None:
    t = tpl(physical=PHYSICAL, stack_name="s")
    assert t.resolve({"Fn::Sub": "${AWS::StackName}-${Env}:${Port}/${Queue}/${Queue.Arn}"}) == (
        f"s-prod:5432/https://sqs/q/{PHYSICAL['Queue']['Arn']}"
    )
    assert t.resolve({"Fn::Sub": "${Db.Endpoint.Address}:${!Literal}"}) == "db.example:${Literal}"
    size = {"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "Small"]}
    listed = {"Fn::Sub": ["${Size}-${Env}-${AWS::Region}", {"Size": size}]}
    assert t.resolve(listed) == "s-prod-prod-us-east-1"


def test_sub_refuses_what_it_cannot_read() -> None:
    t = tpl()
    with pytest.raises(TemplateError, match="unterminated"):
        t.resolve({"Fn::Sub": "x-${Env"})
    with pytest.raises(TemplateError, match=r"\$\{Zones\}"):  # a list cannot be substituted into text
        t.resolve({"Fn::Sub": "${Zones}"})
    with pytest.raises(TemplateError, match="Fn::Sub takes"):
        t.resolve({"Fn::Sub": ["only text"]})


_LITERAL = st.text(st.characters(exclude_characters="$", exclude_categories=["Cs"]), max_size=20)
_NAME = st.from_regex(r"[A-Za-z0-9_:.\-]{0,12}", fullmatch=True)


@given(st.lists(st.one_of(_LITERAL.map(lambda s: ("lit", s)), _NAME.map(lambda s: ("esc", s))), max_size=8))
def test_sub_keeps_literal_text_and_unescapes_bang_variables(pieces: list[tuple[str, str]]) -> None:
    t = Template({"Resources": {}})
    text = "".join(s if kind == "lit" else f"${{!{s}}}" for kind, s in pieces)
    expected = "".join(s if kind == "lit" else f"${{{s}}}" for kind, s in pieces)
    assert t.resolve({"Fn::Sub": text}) == expected


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True), st.text(max_size=12), min_size=1))
def test_sub_variables_are_inserted_verbatim(variables: dict[str, str]) -> None:
    """A variable's value is not parsed again, whatever it contains (even ``${...}``)."""
    t = Template({"Resources": {}})
    names = sorted(variables)
    text = "|".join(f"${{{n}}}" for n in names)
    assert t.resolve({"Fn::Sub": [text, variables]}) == "|".join(variables[n] for n in names)


# ---------------------------------------------------------------- conditions


def test_condition_functions() -> None:
    prod, test = tpl(), tpl(parameters={"Env": "test", "Flag": "false"})
    assert [prod.condition(c) for c in ("IsProd", "IsTest", "FlagOn", "Both", "Either")] == [
        True, False, True, True, True,
    ]  # fmt: skip
    assert [test.condition(c) for c in ("IsProd", "IsTest", "FlagOn", "Both", "Either")] == [
        False, True, False, False, True,
    ]  # fmt: skip
    assert prod.resolve({"Fn::If": ["IsProd", "big", "small"]}) == "big"
    assert test.resolve({"Fn::If": ["IsProd", "big", "small"]}) == "small"
    assert prod.resolve({"Condition": "IsTest"}) is False
    assert prod.resolve({"Fn::Equals": [{"Ref": "Port"}, 5432]}) is True  # compared as CloudFormation does: as text
    assert prod.resolve({"Fn::Equals": [{"Ref": "Zones"}, ["a", "b", "c"]]}) is True


def test_malformed_conditions_are_refused() -> None:
    t = tpl(BASE.replace("Conditions:\n", "Conditions:\n  A: !Condition B\n  B: !Condition A\n  NotBool: !Ref Env\n"))
    with pytest.raises(TemplateError, match="A -> B -> A"):
        t.condition("A")
    with pytest.raises(TemplateError, match="NotBool: expected true or false"):
        t.condition("NotBool")
    with pytest.raises(TemplateError, match="'Nope' is not declared"):
        t.resolve({"Fn::If": ["Nope", 1, 2]})
    with pytest.raises(TemplateError, match="2 to 10"):
        t.resolve({"Fn::And": [{"Condition": "IsProd"}]})


def test_conditions_decide_resources_and_outputs() -> None:
    prod = tpl(physical=PHYSICAL)
    assert prod.is_active("Db")
    assert not prod.is_active("TestOnly")
    assert list(prod.active_resources()) == ["Queue", "Db"]
    assert prod.outputs() == {"QueueArn": PHYSICAL["Queue"]["Arn"], "DbHost": "db.example"}
    test = tpl(parameters={"Env": "test"}, physical={**PHYSICAL, "TestOnly": {"Ref": "arn:topic"}})
    assert list(test.active_resources()) == ["Queue", "TestOnly"]
    assert list(test.active_outputs()) == ["QueueArn", "TopicName"]
    assert test.outputs()["TopicName"] == "arn:topic"
    with pytest.raises(TemplateError, match=r"cannot resolve Fn::GetAtt Queue\.Arn"):
        tpl().outputs()  # outputs read resources: nothing provisioned, nothing to read


# ---------------------------------------------------------------- AWS::NoValue and the other functions


def test_no_value_removes_the_key_or_the_list_item() -> None:
    t = tpl(parameters={"Env": "test"})
    props = {
        "Keep": 1,
        "Drop": {"Fn::If": ["IsProd", "x", {"Ref": "AWS::NoValue"}]},
        "Items": ["a", {"Fn::If": ["IsProd", "b", {"Ref": "AWS::NoValue"}]}, {"Ref": "AWS::NoValue"}, "c"],
        "Nested": {"Inner": {"Ref": "AWS::NoValue"}},
    }
    assert t.resolve(props) == {"Keep": 1, "Items": ["a", "c"], "Nested": {}}
    assert t.resolve({"Ref": "AWS::NoValue"}) is None
    assert t.resolve({"Fn::Join": ["-", ["a", {"Ref": "AWS::NoValue"}, "b"]]}) == "a-b"


def test_find_in_map_with_nested_intrinsics() -> None:
    t, test = tpl(), tpl(parameters={"Env": "test"})
    size = {"Fn::FindInMap": ["Pick", "size", {"Ref": "Env"}]}
    nested = {"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, size]}
    assert (t.resolve(nested), test.resolve(nested)) == ("l-prod", "s-test")
    via_if = {"Fn::FindInMap": ["Sizes", {"Fn::If": ["IsProd", "test", "prod"]}, "Small"]}
    assert t.resolve(via_if) == "s-test"
    with pytest.raises(TemplateError, match=r"FindInMap \['Sizes', 'prod', 'Huge'\]"):
        t.resolve({"Fn::FindInMap": ["Sizes", "prod", "Huge"]})
    with pytest.raises(TemplateError, match="FindInMap takes"):
        t.resolve({"Fn::FindInMap": ["Sizes", "prod"]})


def test_split_select_join() -> None:
    t = tpl()
    arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:tandem/x-AbC"
    assert t.resolve({"Fn::Split": [":", arn]})[6] == "tandem/x-AbC"
    assert t.resolve({"Fn::Select": ["6", {"Fn::Split": [":", arn]}]}) == "tandem/x-AbC"
    assert t.resolve({"Fn::Select": [1, {"Ref": "Zones"}]}) == "b"
    assert t.resolve({"Fn::Join": [",", {"Ref": "Zones"}]}) == "a,b,c"
    assert t.resolve({"Fn::Join": ["", ["p", {"Ref": "Port"}, True]]}) == "p5432true"
    with pytest.raises(TemplateError, match="out of range"):
        t.resolve({"Fn::Select": [3, {"Ref": "Zones"}]})
    with pytest.raises(TemplateError, match="Fn::Select needs"):
        t.resolve({"Fn::Select": [-1, {"Ref": "Zones"}]})
    with pytest.raises(TemplateError, match="Fn::Join needs a list"):
        t.resolve({"Fn::Join": [",", "abc"]})


def test_get_azs_cidr_base64() -> None:
    t = tpl(region="us-west-2")
    assert t.resolve({"Fn::GetAZs": ""}) == ["us-west-2a", "us-west-2b", "us-west-2c"]
    assert t.resolve({"Fn::Select": [2, {"Fn::GetAZs": {"Ref": "AWS::Region"}}]}) == "us-west-2c"
    assert t.resolve({"Fn::Cidr": ["10.40.0.0/16", 3, 12]}) == ["10.40.0.0/20", "10.40.16.0/20", "10.40.32.0/20"]
    assert t.resolve({"Fn::Cidr": ["10.0.0.0/24", "2", "6"]}) == ["10.0.0.0/26", "10.0.0.64/26"]
    with pytest.raises(TemplateError, match="Fn::Cidr"):
        t.resolve({"Fn::Cidr": ["10.0.0.0/30", 8, 1]})
    assert base64.b64decode(t.resolve({"Fn::Base64": {"Fn::Sub": "r=${AWS::Region}"}})) == b"r=us-west-2"


@pytest.mark.parametrize(
    "expression",
    [
        {"Fn::ImportValue": "other-stack-Export"},
        {"Fn::Length": [1, 2]},
        {"Fn::ToJsonString": {"a": 1}},
        {"Fn::Transform": {"Name": "AWS::Include"}},
        {"Fn::Contains": [["a"], "a"]},
    ],
)
def test_anything_else_is_refused_naming_the_expression(expression: dict[str, Any]) -> None:
    (name,) = expression
    with pytest.raises(TemplateError, match=re.escape(name)):
        tpl().resolve({"Wrapped": [expression]})


def test_expand_applies_only_the_deployments_choices() -> None:
    """What the infra tests read: conditions, NoValue and mappings applied; references left symbolic."""
    t = tpl(parameters={"Env": "test"})
    value = {
        "A": {"Ref": "Queue"},
        "B": {"Fn::If": ["IsProd", {"Ref": "Db"}, {"Ref": "AWS::NoValue"}]},
        "C": {"Fn::Sub": ["x-${S}", {"S": {"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "Small"]}}]},
        "D": [{"Fn::If": ["IsTest", {"Fn::GetAtt": ["Queue", "Arn"]}, "no"]}],
        "E": "{{resolve:ssm:/not/read}}",
    }
    assert t.expand(value) == {
        "A": {"Ref": "Queue"},
        "C": {"Fn::Sub": ["x-${S}", {"S": "s-test"}]},
        "D": [{"Fn::GetAtt": ["Queue", "Arn"]}],
        "E": "{{resolve:ssm:/not/read}}",
    }


# ---------------------------------------------------------------- parameter types and constraints


def test_number_parameters_stay_strings_and_are_checked() -> None:
    t = tpl(parameters={"Port": "6543"})
    assert t.resolve({"Ref": "Port"}) == "6543"
    assert tpl().resolve({"Ref": "Port"}) == "5432"  # a YAML number default is passed on as text
    for bad, why in (("ten", "is not a number"), ("0", "below MinValue 1"), ("70000", "above MaxValue 65535")):
        with pytest.raises(TemplateError, match=f"parameter Port='{bad}'.*{why}"):
            tpl(parameters={"Port": bad}).parameter("Port")


def test_list_parameters_resolve_to_lists() -> None:
    t = with_params(
        "  Cdl: {Type: CommaDelimitedList, Default: 'x, y'}\n"
        "  Nums: {Type: 'List<Number>', Default: '1,2.5', MaxValue: 3}\n"
        "  Subnets: {Type: 'List<AWS::EC2::Subnet::Id>'}\n"
        "  Subnet: {Type: 'AWS::EC2::Subnet::Id'}\n",
        parameters={"Subnets": "subnet-1,subnet-2", "Subnet": "subnet-9"},
    )
    assert t.resolve({"Ref": "Cdl"}) == ["x", "y"]
    assert t.resolve({"Ref": "Nums"}) == ["1", "2.5"]
    assert t.resolve({"Ref": "Subnets"}) == ["subnet-1", "subnet-2"]
    assert t.resolve({"Ref": "Subnet"}) == "subnet-9"
    with pytest.raises(TemplateError, match="4 is above MaxValue 3"):
        Template(t.doc, parameters={**t.parameters, "Nums": "1,4"}).parameter_value("Nums")


def test_allowed_values_pattern_and_lengths() -> None:
    t = with_params(
        "  Role: {Type: String, AllowedValues: [primary, dr]}\n"
        "  Region: {Type: String, AllowedPattern: '[a-z]{2}-[a-z]+-[0-9]', ConstraintDescription: a region name}\n"
        "  Name: {Type: String, MinLength: 2, MaxLength: 4}\n"
        "  Envs: {Type: CommaDelimitedList, AllowedValues: [a, b]}\n",
        parameters={"Role": "primary", "Region": "us-east-1", "Name": "abc", "Envs": "a, b"},
    )
    t.validate()
    cases = {
        "Role": ("secondary", r"'secondary' is not one of AllowedValues \['primary', 'dr'\]"),
        "Region": ("us-east-1x", r"does not match AllowedPattern .* \(a region name\)"),  # full match, not search
        "Name": ("abcde", "longer than MaxLength 4"),
        "Envs": ("a,c", "'c' is not one of AllowedValues"),
    }
    for name, (value, why) in cases.items():
        bad = Template(t.doc, parameters={**t.parameters, name: value})
        with pytest.raises(TemplateError, match=f"parameter {name}=.*{why}"):
            bad.parameter_value(name)
        with pytest.raises(TemplateError, match=f"parameter {name}="):
            bad.validate()


def test_validate_checks_every_parameter_and_the_rules() -> None:
    doc = """
Parameters:
  Peer: {Type: String, Default: ""}
  Secret: {Type: String, Default: ""}
  Required: {Type: String}
Rules:
  PeerNeedsSecret:
    RuleCondition: !Not [!Equals [!Ref Peer, ""]]
    Assertions:
      - Assert: !Not [!Equals [!Ref Secret, ""]]
        AssertDescription: >-
          With Peer set,
          Secret is required.
Resources: {}
"""
    tpl(doc, parameters={"Required": "x"}).validate()  # rule condition false: nothing asserted
    tpl(doc, parameters={"Required": "x", "Peer": "p", "Secret": "s"}).validate()
    with pytest.raises(TemplateError, match=r"rule PeerNeedsSecret fails: With Peer set, Secret is required\.$"):
        tpl(doc, parameters={"Required": "x", "Peer": "p"}).validate()
    with pytest.raises(TemplateError, match="'Required' has no default"):
        tpl(doc).validate()
    with pytest.raises(TemplateError, match="not declared in the template: Typo"):
        tpl(doc, parameters={"Required": "x", "Typo": "1"}).validate()
    with pytest.raises(TemplateError, match="unsupported Type 'Strng'"):
        with_params("  P: {Type: Strng, Default: x}").parameter("P")


def test_ssm_typed_parameters_are_read_through_the_lookup() -> None:
    params = (
        "  Table: {Type: 'AWS::SSM::Parameter::Value<String>'}\n"
        "  Subnets: {Type: 'AWS::SSM::Parameter::Value<List<AWS::EC2::Subnet::Id>>'}\n"
        "  Names: {Type: 'AWS::SSM::Parameter::Value<CommaDelimitedList>'}\n"
        "  NameOnly: {Type: 'AWS::SSM::Parameter::Name', Default: /tandem/x}\n"
    )
    given_names = {"Table": "/tandem/dr/ledger-table-name", "Subnets": "/tandem/dr/subnet-ids", "Names": "/n"}
    store = dict(zip(given_names.values(), ["tandem-ledger", "subnet-1,subnet-2", "a, b"], strict=True))
    asked: list[str] = []

    def ssm(name: str) -> str:
        asked.append(name)
        return store[name]

    t = with_params(params, parameters=given_names, ssm=ssm)
    assert t.resolve({"Fn::Sub": "table/${Table}"}) == "table/tandem-ledger"
    assert t.resolve({"Ref": "Subnets"}) == ["subnet-1", "subnet-2"]
    assert t.resolve({"Ref": "Names"}) == ["a", "b"]
    assert t.parameter("Subnets") == "subnet-1,subnet-2"
    assert t.resolve({"Ref": "NameOnly"}) == "/tandem/x"  # a Name type is the name itself: nothing read
    t.parameter("Table")
    assert asked == ["/tandem/dr/ledger-table-name", "/tandem/dr/subnet-ids", "/n"]  # each read once

    no_lookup = with_params(params, parameters=given_names)
    with pytest.raises(TemplateError, match=r"parameter Table .*'/tandem/dr/ledger-table-name'.*ssm lookup"):
        no_lookup.resolve({"Ref": "Table"})
    missing = with_params(params, parameters={**given_names, "Table": "/nope"}, ssm=ssm)
    with pytest.raises(TemplateError, match="parameter Table: SSM parameter '/nope' not found"):
        missing.parameter("Table")


# ---------------------------------------------------------------- dynamic references


def test_dynamic_references_go_through_the_hook() -> None:
    seen: list[tuple[str, str]] = []

    def dynamic(service: str, reference: str) -> str:
        seen.append((service, reference))
        return {"ssm": "v1", "secretsmanager": "pw"}[service]

    physical = {"Secret": {"Ref": "arn:aws:secretsmanager:us-east-1:1:secret:s-AbC"}}
    t = tpl(physical=physical, dynamic=dynamic)
    props = {
        "Password": {"Fn::Sub": "{{resolve:secretsmanager:${Secret}:SecretString:password}}"},
        "Plain": "x-{{resolve:ssm:/tandem/p}}-y",
        "List": ["{{resolve:ssm:/tandem/p}}"],
    }
    assert t.resolve(props) == {"Password": "pw", "Plain": "x-v1-y", "List": ["v1"]}
    assert seen == [("secretsmanager", "arn:aws:secretsmanager:us-east-1:1:secret:s-AbC:SecretString:password"),
                    ("ssm", "/tandem/p")]  # fmt: skip
    with pytest.raises(TemplateError, match=r"\{\{resolve:ssm:/tandem/p\}\} needs a dynamic-reference lookup"):
        tpl().resolve("{{resolve:ssm:/tandem/p}}")
    with pytest.raises(TemplateError, match="unsupported dynamic reference"):
        t.resolve("{{resolve:vault:x}}")

    def nothing(service: str, reference: str) -> str:
        raise KeyError(reference)

    with pytest.raises(TemplateError, match=r"\{\{resolve:ssm:/missing\}\}: not found"):
        tpl(dynamic=nothing).resolve("{{resolve:ssm:/missing}}")


# ---------------------------------------------------------------- deployment order

ORDER = """
Parameters:
  Switch: {Type: String, Default: "yes"}
Conditions:
  IsOn: !Equals [!Ref Switch, "yes"]
Resources:
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmActions: [!Ref Topic]
      Dimensions: [{Name: QueueName, Value: !GetAtt Queue.QueueName}]
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      KmsMasterKeyId: !Sub "${Key.Arn}"
  Queue:
    Type: AWS::SQS::Queue
    DependsOn: Bucket
    Properties:
      KmsMasterKeyId: !Sub "alias/${Key}-${AWS::Region}"
      Password: "{{resolve:ssm:/made/by/Late}}"
  Key:
    Type: AWS::KMS::Key
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      Tags: [{Key: k, Value: !If [IsOn, !Ref Key, !Ref Spare]}]
  Spare:
    Type: AWS::SNS::Topic
    Condition: IsOn
  Late:
    Type: AWS::SSM::Parameter
"""


def test_deployment_order_follows_refs_getatts_subs_and_depends_on() -> None:
    order = tpl(ORDER).deployment_order()
    assert sorted(order) == sorted(["Alarm", "Topic", "Queue", "Key", "Bucket", "Spare", "Late"])
    before = {(a, b) for i, a in enumerate(order) for b in order[i + 1 :]}
    for first, then in [("Topic", "Alarm"), ("Queue", "Alarm"), ("Key", "Topic"), ("Key", "Queue"),
                        ("Bucket", "Queue"), ("Key", "Bucket")]:  # fmt: skip
        assert (first, then) in before, (first, then, order)
    assert order == ["Key", "Topic", "Bucket", "Queue", "Alarm", "Spare", "Late"]  # template order breaks ties


def test_deployment_order_skips_inactive_resources_and_untaken_branches() -> None:
    off = tpl(ORDER, parameters={"Switch": "no"})
    with pytest.raises(TemplateError, match=r"Bucket refers to Spare: resource Spare is not created"):
        off.deployment_order()  # the taken branch names a resource that is not created
    doc = loads(ORDER)
    doc["Resources"]["Bucket"]["Properties"]["Tags"][0]["Value"] = {"Fn::If": ["IsOn", {"Ref": "Spare"}, "none"]}
    assert "Spare" not in Template(doc, parameters={"Switch": "no"}).deployment_order()


def test_deployment_order_refuses_cycles_and_unknown_names() -> None:
    doc = loads(ORDER)
    doc["Resources"]["Key"]["Properties"] = {"Description": {"Fn::GetAtt": ["Alarm", "Arn"]}}
    with pytest.raises(TemplateError, match="dependency cycle: Alarm -> Topic -> Key -> Alarm"):
        Template(doc).deployment_order()
    doc = loads(ORDER)
    doc["Resources"]["Key"]["DependsOn"] = ["Key"]
    with pytest.raises(TemplateError, match="dependency cycle: Key -> Key"):
        Template(doc).deployment_order()
    doc = loads(ORDER)
    doc["Resources"]["Key"]["DependsOn"] = "Nope"
    with pytest.raises(TemplateError, match="Key DependsOn Nope"):
        Template(doc).deployment_order()
    doc = loads(ORDER)
    doc["Resources"]["Key"]["Properties"] = {"Description": {"Fn::Sub": "${Ghost.Arn}"}}
    with pytest.raises(TemplateError, match="Key refers to Ghost"):
        Template(doc).deployment_order()


def test_deployment_order_knows_what_sam_generates_and_globals() -> None:
    doc = loads("""
Globals:
  Function:
    KmsKeyArn: !GetAtt Key.Arn
Resources:
  Mapping:
    Type: AWS::ApiGatewayV2::ApiMapping
    Properties:
      Stage: !Ref ApiApiGatewayDefaultStage
      Target: !Ref FnQueueEvent
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Role: !GetAtt FnRole.Arn
  Api:
    Type: AWS::Serverless::HttpApi
  Key:
    Type: AWS::KMS::Key
""")
    t = Template(doc)
    assert (t.generated_by("ApiApiGatewayDefaultStage"), t.generated_by("FnQueueEvent"), t.generated_by("Fn")) == (
        "Api",
        "Fn",
        None,
    )
    assert t.deployment_order() == ["Api", "Key", "Fn", "Mapping"]


# ---------------------------------------------------------------- samconfig.toml


def test_every_samconfig_env_parses_into_a_deployable_config() -> None:
    envs = samconfig_envs()
    assert {"primary", "dr", "global-primary", "global-secondary"} <= set(envs)
    for env in envs:
        config = samconfig_parameters(env)
        assert isinstance(config, SamConfig)
        assert config.env == env
        assert config.template_file in (APP_TEMPLATE, GLOBAL_TEMPLATE), env
        assert re.fullmatch(r"[a-z]{2}-[a-z]+-\d", config.region), env
        assert config.stack_name.startswith("tandem-"), env
        assert config.parameters, env
        assert set(config.parameters) <= set(load(config.template_file)["Parameters"]), env
    primary, dr = samconfig_parameters("primary"), samconfig_parameters("dr")
    assert (primary.stack_name, primary.region) == ("tandem-app-primary", "us-east-1")
    assert primary.template_file == APP_TEMPLATE
    assert (dr.stack_name, dr.region, dr.parameters["RegionRole"]) == ("tandem-app-dr", "us-west-2", "dr")
    assert samconfig_parameters("default").parameters == primary.parameters
    assert primary.parameters["LedgerTableName"] == "/tandem/primary/ledger-table-name"  # an SSM name, unresolved
    assert samconfig_parameters("global-secondary").template_file == GLOBAL_TEMPLATE
    with pytest.raises(TemplateError, match=r"no \[staging\.deploy\.parameters\]"):
        samconfig_parameters("staging")


def test_samconfig_string_form_and_section_precedence(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(
        """
version = 0.1
[x.global.parameters]
stack_name = "from-global"
region = "eu-west-1"
[x.deploy.parameters]
stack_name = "from-deploy"
template_file = "infra/t.yaml"
parameter_overrides = "A=1 B=\\"two words\\"  C='x y' D=a\\\\ b"
""",
        encoding="utf-8",
    )
    config = samconfig_parameters("x", path)
    assert (config.stack_name, config.region, config.template_file) == (
        "from-deploy",
        "eu-west-1",
        (tmp_path / "infra" / "t.yaml").resolve(),
    )
    assert config.parameters == {"A": "1", "B": "two words", "C": "x y", "D": "a b"}


def test_parameter_overrides_forms() -> None:
    assert parse_parameter_overrides('A=1 B="x y"') == {"A": "1", "B": "x y"}
    assert parse_parameter_overrides("ParameterKey=A,ParameterValue=1 ParameterKey=B,ParameterValue='x y'") == {
        "A": "1",
        "B": "x y",
    }
    assert parse_parameter_overrides(["A=1", ["B=2"], 'C=""', ""]) == {"A": "1", "B": "2", "C": ""}
    assert parse_parameter_overrides({"A": 1, "B": ["x", " y", ""], "C": None, "D": True}) == {
        "A": "1", "B": "x,y", "C": "", "D": "true",
    }  # fmt: skip
    assert parse_parameter_overrides(None) == {}
    for bad in ("A", "A=1 junk", "=1", "C=", "A=1 ParameterKey=B,ParameterValue=2", "file://params.yaml"):
        with pytest.raises(TemplateError, match="parameter_overrides"):
            parse_parameter_overrides(bad)


# ---------------------------------------------------------------- both real templates, every env


class _Attributes(dict[str, str]):
    """Placeholder physical attributes: any attribute of any resource resolves to a recognisable name."""

    def __init__(self, logical_id: str) -> None:
        super().__init__(Ref=f"{logical_id.lower()}-id")
        self.logical_id = logical_id

    def __missing__(self, attribute: str) -> str:
        return f"{self.logical_id}.{attribute}"


class _Provisioned(dict[str, dict[str, str]]):
    """Every resource provisioned, including what SAM generates from the template's serverless resources."""

    def __init__(self, template: Template) -> None:
        super().__init__({lid: _Attributes(lid) for lid in template.doc["Resources"]})
        self.template = template

    def __missing__(self, logical_id: str) -> dict[str, str]:
        if self.template.generated_by(logical_id) is None:
            raise KeyError(logical_id)
        return _Attributes(logical_id)


def _dynamic(service: str, reference: str) -> str:
    assert service in ("ssm", "secretsmanager"), service
    return f"<{service}:{reference}>"


def _published(region: str) -> dict[str, str]:
    """The SSM parameters the global stack of ``region`` publishes, as deploy step 3 leaves them."""
    (env,) = [
        e
        for e in samconfig_envs()
        if samconfig_parameters(e).template_file == GLOBAL_TEMPLATE and samconfig_parameters(e).region == region
    ]
    config = samconfig_parameters(env)
    params = dict(config.parameters)
    if params["RegionRole"] == "secondary":  # step 3: joined to the primary
        params.setdefault("PeerDataKeyArn", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/primary")
        params.setdefault("PrimaryLedgerDbSecretArn", f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:tandem/x-AbC")
    glob = Template(load(GLOBAL_TEMPLATE), parameters=params, region=region, account=ACCOUNT)
    glob.physical = _Provisioned(glob)
    return {
        glob.resolve(res["Properties"]["Name"]): glob.resolve(res["Properties"]["Value"])
        for res in glob.active_resources().values()
        if res["Type"] == "AWS::SSM::Parameter"
    }


@pytest.mark.parametrize("env", samconfig_envs())
def test_both_real_templates_resolve_completely_for_every_samconfig_env(env: str) -> None:
    config = samconfig_parameters(env)
    store = _published(config.region)
    t = config.template(account=ACCOUNT, ssm=store.__getitem__, dynamic=_dynamic)
    t.physical = _Provisioned(t)
    t.validate()
    order = t.deployment_order()
    assert set(order) == set(t.active_resources())
    for logical_id, resource in t.active_resources().items():
        resolved = t.resolve(resource.get("Properties", {}))
        assert "{{resolve:" not in str(resolved), logical_id
        for key, value in _walk(resolved):
            assert not (isinstance(key, str) and (key == "Ref" or key.startswith("Fn::"))), (logical_id, key, value)
    for section in t.doc.get("Globals", {}).values():
        t.resolve(section)
    for name, value in t.outputs().items():
        assert value is not None, name
    for logical_id in t.resources_of_type("AWS::Serverless::Function"):
        if t.is_active(logical_id):
            assert all(isinstance(v, str) for v in t.function_environment(logical_id).values())
    if config.template_file == APP_TEMPLATE:
        # the app's SSM-typed parameters read what the global stack of its region publishes
        assert t.parameter("LedgerTableName") == "tandem-ledger"
        assert t.parameter_value("SubnetIds") == ["privatesubneta-id", "privatesubnetb-id", "privatesubnetc-id"]
        assert t.parameter("LedgerDbHost").endswith("Cluster.Endpoint.Address")
        assert t.parameter("LedgerDbReaderHost").endswith("Cluster.ReadEndpoint.Address")  # active in a secondary


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of every mapping entry, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)

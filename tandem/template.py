"""One resolver for our CloudFormation/SAM templates: the twin provisions from it, the tests read through it.

Why one: a hand-written copy of a resource's configuration drifts (the twin once replicated only
``archive/`` while the template replicated the whole bucket), and two resolvers end up disagreeing about
what a template means. So ``template.yaml`` and ``infra_global/template.yaml`` are read here, and only
here, the way CloudFormation reads them:

- **parameters** typed as CloudFormation types them: ``Number`` stays a string, list types
  (``CommaDelimitedList``, ``List<...>``) become lists of space-trimmed strings, and the value of an
  ``AWS::SSM::Parameter::Value<...>`` parameter is an SSM parameter *name* read through the injected
  ``ssm`` lookup. AllowedValues, AllowedPattern (full match), MinLength/MaxLength and MinValue/MaxValue
  are checked on the value given, and ``Rules`` are asserted by :meth:`Template.validate`;
- **pseudo parameters** ``AWS::Region``, ``AWS::AccountId``, ``AWS::StackName``, ``AWS::StackId``,
  ``AWS::Partition``, ``AWS::URLSuffix``, ``AWS::NotificationARNs`` and ``AWS::NoValue`` (which removes
  the key from its mapping, or the item from its list);
- **intrinsics** ``Ref``, ``Fn::GetAtt`` (dotted attributes such as ``Endpoint.Address`` too),
  ``Fn::Sub`` (both forms, ``${Res.Attr}``, ``${!Literal}``), ``Fn::If``/``Fn::Equals``/``Fn::Not``/
  ``Fn::And``/``Fn::Or``/``Condition``, ``Fn::FindInMap``, ``Fn::Split``, ``Fn::Select``, ``Fn::Join``,
  ``Fn::GetAZs`` (``<region>a`` to ``<region>c``), ``Fn::Cidr`` and ``Fn::Base64``. Resources resolve from
  ``physical``: what provisioning created, per logical id ``{"Ref": ..., "<Attribute>": ...}``;
- **dynamic references** ``{{resolve:ssm:...}}``, ``{{resolve:ssm-secure:...}}`` and
  ``{{resolve:secretsmanager:...}}`` in strings, through the injected ``dynamic`` hook;
- **conditions** on resources and outputs, the **dependency order** a provisioner creates resources in,
  and the **samconfig.toml** config envs as ``sam deploy --config-env`` reads them.

Anything else raises :class:`TemplateError` naming the expression: a resolver that guesses would let the
twin drift from what AWS deploys without anyone noticing.
"""

from __future__ import annotations

import base64
import copy
import functools
import ipaddress
import re
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_TEMPLATE = ROOT / "template.yaml"
GLOBAL_TEMPLATE = ROOT / "infra_global" / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"


class TemplateError(ValueError):
    pass


# libyaml's loader when PyYAML has it (10x faster: the twin reads both templates at every start-up).
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CfnLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    pass


def _tag(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _short, _long in {
    "Ref": "Ref", "Sub": "Fn::Sub", "GetAtt": "Fn::GetAtt", "If": "Fn::If", "Equals": "Fn::Equals",
    "Not": "Fn::Not", "And": "Fn::And", "Or": "Fn::Or", "Join": "Fn::Join", "Select": "Fn::Select",
    "Split": "Fn::Split", "FindInMap": "Fn::FindInMap", "ImportValue": "Fn::ImportValue",
    "GetAZs": "Fn::GetAZs", "Base64": "Fn::Base64", "Condition": "Condition", "Cidr": "Fn::Cidr",
    "Length": "Fn::Length", "ToJsonString": "Fn::ToJsonString",
}.items():  # fmt: skip
    _CfnLoader.add_constructor(f"!{_short}", _tag(_long))


def load(path: Path = APP_TEMPLATE) -> dict[str, Any]:
    """The template at ``path``; parsed once per file version (a fresh copy each call: callers may edit it)."""
    stat = path.stat()
    return copy.deepcopy(_parsed(path.resolve(), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=16)
def _parsed(path: Path, _mtime_ns: int, _size: int) -> dict[str, Any]:
    return loads(path.read_text(encoding="utf-8"), str(path))


def loads(text: str, source: str = "template text") -> dict[str, Any]:
    """A template from YAML (or JSON) text, short tags (``!Ref``, ``!Sub``, ...) read as their long form."""
    doc = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass with CFN tags only
    if not isinstance(doc, dict) or "Resources" not in doc:
        raise TemplateError(f"{source} is not a CloudFormation template")
    return doc


class _NoValue:
    """``Ref: AWS::NoValue``: the enclosing key or list item is removed, as CloudFormation does."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE = _NoValue()
_SSM_VALUE_TYPE = re.compile(r"AWS::SSM::Parameter::Value<(.+)>")
_DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:([a-z-]+):(.+?)\}\}")
_DYNAMIC_SERVICES = ("ssm", "ssm-secure", "secretsmanager")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
#: ``Ref <function>.<attribute>`` SAM resolves for a function with AutoPublishAlias
_SAM_REF_ATTRIBUTES = frozenset({"Alias", "Version"})

#: SAM resource type -> its section of ``Globals`` (SAM merges that section into each such resource).
_SAM_GLOBALS = {
    "AWS::Serverless::Function": "Function", "AWS::Serverless::Api": "Api", "AWS::Serverless::HttpApi": "HttpApi",
    "AWS::Serverless::SimpleTable": "SimpleTable", "AWS::Serverless::StateMachine": "StateMachine",
    "AWS::Serverless::CapacityProvider": "CapacityProvider",
}  # fmt: skip


def _intrinsic(value: dict[str, Any]) -> tuple[str, Any] | None:
    """(function, argument) when ``value`` is an intrinsic call, None for an ordinary mapping."""
    if len(value) != 1:
        return None
    ((key, arg),) = value.items()
    if key == "Ref" or key.startswith("Fn::") or (key == "Condition" and isinstance(arg, str)):
        return key, arg
    return None


def _text(value: Any, where: str) -> str:
    """A scalar as CloudFormation passes it on: strings as they are, booleans lower case, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


def _same(a: Any, b: Any) -> bool:
    """Fn::Equals: CloudFormation compares values as strings (so ``true`` equals ``"true"``)."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return _text(a, "Fn::Equals") == _text(b, "Fn::Equals")


def _sub_parts(text: str) -> Iterator[tuple[str, bool]]:
    """Fn::Sub text as (literal, False) and (variable name, True) pieces; ``${!x}`` is the literal ``${x}``."""
    pos = 0
    while (start := text.find("${", pos)) >= 0:
        end = text.find("}", start + 2)
        if end < 0:
            raise TemplateError(f"Fn::Sub: unterminated '${{' in {text!r}")
        name = text[start + 2 : end]
        yield text[pos:start], False
        yield (f"${{{name[1:]}}}", False) if name.startswith("!") else (name, True)
        pos = end + 1
    yield text[pos:], False


def _sub_argument(arg: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(arg, str):
        return arg, {}
    if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
        return arg[0], arg[1]
    raise TemplateError(f"Fn::Sub takes a string or [string, {{variables}}], got {arg!r}")


def _pair(function: str, arg: Any) -> tuple[Any, Any]:
    if not isinstance(arg, list) or len(arg) != 2:
        raise TemplateError(f"{function} takes two arguments, got {arg!r}")
    return arg[0], arg[1]


def _partition(region: str) -> tuple[str, str]:
    """(AWS::Partition, AWS::URLSuffix) of a region."""
    if region.startswith("cn-"):
        return "aws-cn", "amazonaws.com.cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov", "amazonaws.com"
    return "aws", "amazonaws.com"


@dataclass
class Template:
    """A loaded template plus what one deployment (one stack in one region) gives it.

    ``parameters`` are the values as passed to CloudFormation (for SSM-typed parameters: the SSM parameter
    names); ``ssm(name)`` returns an SSM parameter's value and ``dynamic(service, reference)`` the value of a
    ``{{resolve:service:reference}}`` dynamic reference. Without them, reading what needs them raises.
    """

    doc: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"
    #: what provisioning created: logical id -> {"Ref": physical id, "<Attribute>": value, ...}
    physical: dict[str, dict[str, str]] = field(default_factory=dict)
    stack_name: str | None = field(default=None, kw_only=True)
    ssm: Callable[[str], str] | None = field(default=None, kw_only=True, repr=False, compare=False)
    dynamic: Callable[[str, str], str] | None = field(default=None, kw_only=True, repr=False, compare=False)
    _ssm_values: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _dynamic_values: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_file(cls, path: Path = APP_TEMPLATE, **kwargs: Any) -> Template:
        return cls(load(path), **kwargs)

    # ------------------------------------------------------------ the template as written

    def resource(self, logical_id: str) -> dict[str, Any]:
        try:
            res: dict[str, Any] = self.doc["Resources"][logical_id]
        except KeyError:
            raise TemplateError(f"resource {logical_id!r} is not in the template") from None
        return res

    def properties(self, logical_id: str) -> dict[str, Any]:
        """A resource's Properties as written (unresolved)."""
        props: dict[str, Any] = self.resource(logical_id).get("Properties", {})
        return props

    def resources_of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        """Every resource of a type, whatever its condition (see :meth:`active_resources`)."""
        return {k: v for k, v in self.doc["Resources"].items() if v.get("Type") == cfn_type}

    def generated_by(self, logical_id: str) -> str | None:
        """The ``AWS::Serverless::*`` resource whose SAM expansion creates ``logical_id``, if it is one.

        SAM names what it generates after the owner (``FnRole``, ``Fn<Event>`` for an SQS mapping,
        ``ApiApiGatewayDefaultStage``), and templates may refer to those names.
        """
        resources = self.doc["Resources"]
        if logical_id in resources:
            return None
        owners = [
            owner
            for owner, res in resources.items()
            if str(res.get("Type", "")).startswith("AWS::Serverless::") and logical_id.startswith(owner)
        ]
        return max(owners, key=len) if owners else None

    # ------------------------------------------------------------ parameters

    def parameter(self, name: str) -> str:
        """A parameter's value as text (SSM-typed ones read through ``ssm``; lists comma-joined)."""
        value = self.parameter_value(name)
        return ",".join(value) if isinstance(value, list) else value

    def parameter_value(self, name: str) -> str | list[str]:
        """What ``Ref`` of the parameter gives: a string, or a list for the list types."""
        spec = self._parameter_spec(name)
        given = self._given(name, spec)
        inner, is_ssm = self._check_parameter(name, spec, given)
        value = self._ssm_value(name, spec, given) if is_ssm else given
        if inner == "CommaDelimitedList" or inner.startswith("List<"):
            return [item.strip() for item in value.split(",")]
        return value

    def _parameter_spec(self, name: str) -> dict[str, Any]:
        spec = self.doc.get("Parameters", {}).get(name)
        if not isinstance(spec, dict):
            raise TemplateError(f"parameter {name!r} is not declared in the template")
        return spec

    def _given(self, name: str, spec: dict[str, Any]) -> str:
        if name in self.parameters:
            return _text(self.parameters[name], f"parameter {name}")
        if "Default" not in spec:
            raise TemplateError(f"parameter {name!r} has no default and no value was given")
        default = spec["Default"]
        if isinstance(default, list):
            return ",".join(_text(v, f"parameter {name} Default") for v in default)
        return _text(default, f"parameter {name} Default")

    def _check_parameter(self, name: str, spec: dict[str, Any], value: str) -> tuple[str, bool]:
        """Type and constraints of a given value, as CloudFormation checks them; (type behind SSM, is SSM)."""
        declared = str(spec.get("Type", ""))
        ssm = _SSM_VALUE_TYPE.fullmatch(declared)
        inner = ssm.group(1) if ssm else declared
        known = inner in ("String", "Number", "CommaDelimitedList") or inner.startswith(("List<", "AWS::"))
        if not known or (ssm and inner == "Number"):
            raise TemplateError(f"parameter {name}: unsupported Type {declared!r}")
        is_list = not ssm and (inner == "CommaDelimitedList" or inner.startswith("List<"))
        numeric = not ssm and inner in ("Number", "List<Number>")

        def fail(why: str) -> TemplateError:
            hint = f" ({spec['ConstraintDescription']})" if "ConstraintDescription" in spec else ""
            return TemplateError(f"parameter {name}={value!r}: {why}{hint}")

        for item in [v.strip() for v in value.split(",")] if is_list else [value]:
            allowed = spec.get("AllowedValues")
            if allowed is not None and item not in [_text(a, f"parameter {name} AllowedValues") for a in allowed]:
                raise fail(f"{item!r} is not one of AllowedValues {allowed}")
            pattern = spec.get("AllowedPattern")
            if pattern is not None and not re.fullmatch(str(pattern), item):
                raise fail(f"{item!r} does not match AllowedPattern {pattern!r}")
            if numeric:
                if not _NUMBER.fullmatch(item):
                    raise fail(f"{item!r} is not a number")
                if "MinValue" in spec and float(item) < float(spec["MinValue"]):
                    raise fail(f"{item} is below MinValue {spec['MinValue']}")
                if "MaxValue" in spec and float(item) > float(spec["MaxValue"]):
                    raise fail(f"{item} is above MaxValue {spec['MaxValue']}")
        if not is_list and not numeric:
            if "MinLength" in spec and len(value) < int(spec["MinLength"]):
                raise fail(f"shorter than MinLength {spec['MinLength']}")
            if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
                raise fail(f"longer than MaxLength {spec['MaxLength']}")
        return inner, ssm is not None

    def _ssm_value(self, name: str, spec: dict[str, Any], ssm_name: str) -> str:
        if ssm_name not in self._ssm_values:
            if self.ssm is None:
                raise TemplateError(
                    f"parameter {name} ({spec['Type']}) names the SSM parameter {ssm_name!r}; "
                    "reading it needs an ssm lookup: Template(..., ssm=...)"
                )
            try:
                self._ssm_values[ssm_name] = self.ssm(ssm_name)
            except LookupError as e:
                raise TemplateError(f"parameter {name}: SSM parameter {ssm_name!r} not found ({e})") from e
        return self._ssm_values[ssm_name]

    def validate(self) -> None:
        """What CloudFormation checks before it creates anything: every parameter, condition and rule."""
        declared = self.doc.get("Parameters", {})
        unknown = sorted(set(self.parameters) - set(declared))
        if unknown:
            raise TemplateError(f"parameters not declared in the template: {', '.join(unknown)}")
        for name in declared:
            self.parameter_value(name)
        for name in self.doc.get("Conditions", {}):
            self.condition(name)
        for name, rule in self.doc.get("Rules", {}).items():
            if "RuleCondition" in rule and not self._truth(rule["RuleCondition"], f"rule {name}"):
                continue
            for assertion in rule.get("Assertions", []):
                if not self._truth(assertion["Assert"], f"rule {name}"):
                    why = assertion.get("AssertDescription", f"assertion {assertion['Assert']!r} is false")
                    raise TemplateError(f"rule {name} fails: {' '.join(str(why).split())}")

    # ------------------------------------------------------------ conditions

    def condition(self, name: str) -> bool:
        conditions = self.doc.get("Conditions", {})
        if not isinstance(name, str) or name not in conditions:
            raise TemplateError(f"condition {name!r} is not declared")
        _condition_cycle(conditions, name, [])
        return self._truth(conditions[name], f"condition {name}")

    def _truth(self, expression: Any, where: str) -> bool:
        value = self._eval(expression)
        if not isinstance(value, bool):
            raise TemplateError(f"{where}: expected true or false, got {value!r}")
        return value

    def is_active(self, logical_id: str) -> bool:
        """Whether CloudFormation creates the resource: its ``Condition`` (if any) holds."""
        return self._holds(self.resource(logical_id), f"resource {logical_id}")

    def _holds(self, declaration: dict[str, Any], where: str) -> bool:
        name = declaration.get("Condition")
        if name is None:
            return True
        if not isinstance(name, str):
            raise TemplateError(f"{where}: Condition must name a condition, got {name!r}")
        return self.condition(name)

    def active_resources(self) -> dict[str, dict[str, Any]]:
        """logical id -> resource (as written) for every resource this deployment creates, in template order."""
        return {k: v for k, v in self.doc["Resources"].items() if self._holds(v, f"resource {k}")}

    def active_outputs(self) -> dict[str, dict[str, Any]]:
        """output name -> declaration (as written) for every output this deployment has."""
        return {k: v for k, v in self.doc.get("Outputs", {}).items() if self._holds(v, f"output {k}")}

    def outputs(self) -> dict[str, Any]:
        """output name -> resolved Value (needs ``physical`` for what the outputs read of resources)."""
        return {k: self.resolve(v["Value"]) for k, v in self.active_outputs().items()}

    # ------------------------------------------------------------ resolution

    def resolve(self, value: Any) -> Any:
        """``value`` as CloudFormation hands it to a resource: every intrinsic and dynamic reference applied.

        A top-level ``Ref: AWS::NoValue`` (the whole value removed) comes back as None.
        """
        resolved = self._eval(value)
        return None if resolved is _NO_VALUE else self._dynamic_references(resolved)

    def expand(self, value: Any) -> Any:
        """``value`` with only the deployment's choices applied: ``Fn::If`` (conditions), ``AWS::NoValue``
        removal and ``Fn::FindInMap``. ``Ref``/``Fn::GetAtt``/``Fn::Sub``/... stay symbolic, so a test can
        read a template's shape for one role without provisioning anything."""
        expanded = self._eval(value, symbolic=True)
        return None if expanded is _NO_VALUE else expanded

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The function's Environment.Variables (Globals merged), resolved for this deployment."""
        merged: dict[str, Any] = {}
        merged.update(self.doc.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
        merged.update(self.properties(logical_id).get("Environment", {}).get("Variables", {}))
        resolved = self.resolve(merged)
        return {k: _text(v, f"{logical_id} environment variable {k}") for k, v in resolved.items()}

    def _eval(self, value: Any, symbolic: bool = False) -> Any:
        if isinstance(value, list):
            items = (self._eval(v, symbolic) for v in value)
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        call = _intrinsic(value)
        if call is None:
            walked = ((k, self._eval(v, symbolic)) for k, v in value.items())
            return {k: v for k, v in walked if v is not _NO_VALUE}
        key, arg = call
        if key == "Ref" and arg == "AWS::NoValue":
            return _NO_VALUE
        if key == "Fn::If":
            if not isinstance(arg, list) or len(arg) != 3:
                raise TemplateError(f"Fn::If takes [condition, value if true, value if false], got {arg!r}")
            return self._eval(arg[1] if self.condition(arg[0]) else arg[2], symbolic)
        if key == "Fn::FindInMap":
            return self._find_in_map(arg)
        if symbolic:
            return {key: self._eval(arg, symbolic=True)}
        return self._call(key, arg, value)

    def _call(self, key: str, arg: Any, expression: dict[str, Any]) -> Any:
        match key:
            case "Ref":
                if not isinstance(arg, str):
                    raise TemplateError(f"Ref takes a name, got {arg!r}")
                return self._ref(arg)
            case "Fn::GetAtt":
                return self._get_att(arg)
            case "Fn::Sub":
                return self._sub(arg)
            case "Condition":
                return self.condition(arg)
            case "Fn::Equals":
                a, b = _pair(key, arg)
                return _same(self._eval(a), self._eval(b))
            case "Fn::Not":
                if not isinstance(arg, list) or len(arg) != 1:
                    raise TemplateError(f"Fn::Not takes [condition], got {arg!r}")
                return not self._truth(arg[0], "Fn::Not")
            case "Fn::And" | "Fn::Or":
                if not isinstance(arg, list) or not 2 <= len(arg) <= 10:
                    raise TemplateError(f"{key} takes 2 to 10 conditions, got {arg!r}")
                values = [self._truth(a, key) for a in arg]
                return all(values) if key == "Fn::And" else any(values)
            case "Fn::Join":
                separator, items = _pair(key, arg)
                parts = self._eval(items)
                if not isinstance(parts, list):
                    raise TemplateError(f"Fn::Join needs a list, got {parts!r} in {expression!r}")
                return _text(self._eval(separator), key).join(_text(p, f"Fn::Join {expression!r}") for p in parts)
            case "Fn::Split":
                separator, source = _pair(key, arg)
                return _text(self._eval(source), key).split(_text(self._eval(separator), key))
            case "Fn::Select":
                return self._select(arg, expression)
            case "Fn::GetAZs":
                region = _text(self._eval(arg), key) or self.region
                return [f"{region}{zone}" for zone in "abc"]
            case "Fn::Cidr":
                return self._cidr(arg, expression)
            case "Fn::Base64":
                return base64.b64encode(_text(self._eval(arg), key).encode()).decode()
        raise TemplateError(f"cannot resolve {key} locally: {expression!r}")

    def _ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self._pseudo(name)
        if name in self.doc.get("Parameters", {}):
            return self.parameter_value(name)
        owner, dot, attribute = name.partition(".")
        if dot and attribute in _SAM_REF_ATTRIBUTES and self.generated_by(name) == owner:
            # SAM's ``Ref Fn.Alias`` / ``Ref Fn.Version``: the alias (version) AutoPublishAlias creates
            return self._attribute(owner, attribute)
        try:
            return self.physical[name]["Ref"]
        except KeyError:
            raise TemplateError(f"cannot resolve Ref {name}: {self._missing(name)}") from None

    def _pseudo(self, name: str) -> Any:
        partition, suffix = _partition(self.region)
        stack = self.stack_name or f"tandem-local-{self.region}"
        stack_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.account}/{self.region}/{stack}")
        match name:
            case "AWS::Region":
                return self.region
            case "AWS::AccountId":
                return self.account
            case "AWS::Partition":
                return partition
            case "AWS::URLSuffix":
                return suffix
            case "AWS::StackName":
                return stack
            case "AWS::StackId":
                return f"arn:{partition}:cloudformation:{self.region}:{self.account}:stack/{stack}/{stack_uuid}"
            case "AWS::NotificationARNs":
                return []
        raise TemplateError(f"unknown pseudo parameter {name}")

    def _missing(self, logical_id: str) -> str:
        """Why a resource has nothing in ``physical``, for the error message."""
        if logical_id in self.doc["Resources"]:
            condition = self.doc["Resources"][logical_id].get("Condition")
            if condition is not None and not self.is_active(logical_id):
                return f"resource {logical_id} is not created (condition {condition} is false)"
            return f"resource {logical_id} is not provisioned"
        owner = self.generated_by(logical_id)
        if owner is not None:
            return f"{logical_id} (generated by SAM for {owner}) is not provisioned"
        return f"{logical_id} is neither a parameter nor a resource of the template"

    def _get_att(self, arg: Any) -> Any:
        if isinstance(arg, str):
            logical, _, attribute = arg.partition(".")
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str):
            logical, attribute = arg[0], _text(self._eval(arg[1]), "Fn::GetAtt")
        else:
            raise TemplateError(f"Fn::GetAtt takes [resource, attribute], got {arg!r}")
        return self._attribute(logical, attribute)

    def _attribute(self, logical: str, attribute: str) -> Any:
        try:
            attributes = self.physical[logical]
        except KeyError:
            raise TemplateError(f"cannot resolve Fn::GetAtt {logical}.{attribute}: {self._missing(logical)}") from None
        try:
            return attributes[attribute]
        except KeyError:
            raise TemplateError(
                f"cannot resolve Fn::GetAtt {logical}.{attribute}: provisioning recorded no such attribute"
            ) from None

    def _sub(self, arg: Any) -> str:
        text, declared = _sub_argument(arg)
        variables = {k: self._eval(v) for k, v in declared.items()}
        out: list[str] = []
        for piece, is_name in _sub_parts(text):
            if not is_name:
                out.append(piece)
                continue
            if piece in variables:
                value = variables[piece]
            elif "." in piece:
                logical, _, attribute = piece.partition(".")
                value = self._attribute(logical, attribute)
            else:
                value = self._ref(piece)
            out.append(_text(value, f"Fn::Sub ${{{piece}}}"))
        return "".join(out)

    def _find_in_map(self, arg: Any) -> Any:
        if not isinstance(arg, list) or len(arg) != 3:
            raise TemplateError(f"Fn::FindInMap takes [map, top-level key, second-level key], got {arg!r}")
        keys = [_text(self._eval(a), "Fn::FindInMap") for a in arg]
        found: Any = self.doc.get("Mappings", {})
        for key in keys:
            entry = (
                next((v for k, v in found.items() if _text(k, "Mappings key") == key), None)
                if isinstance(found, dict)
                else None
            )
            if entry is None:
                raise TemplateError(f"Fn::FindInMap {keys}: Mappings have no {key!r} there")
            found = entry
        return copy.deepcopy(found)

    def _select(self, arg: Any, expression: dict[str, Any]) -> Any:
        index_expr, items_expr = _pair("Fn::Select", arg)
        index, items = self._eval(index_expr), self._eval(items_expr)
        text = _text(index, "Fn::Select index")
        if not text.isdigit() or not isinstance(items, list):
            raise TemplateError(f"Fn::Select needs an index and a list: {expression!r}")
        if int(text) >= len(items):
            raise TemplateError(f"Fn::Select index {text} is out of range for {items!r}")
        return items[int(text)]

    def _cidr(self, arg: Any, expression: dict[str, Any]) -> list[str]:
        if not isinstance(arg, list) or len(arg) != 3:
            raise TemplateError(f"Fn::Cidr takes [ipBlock, count, cidrBits], got {arg!r}")
        block, count, bits = (_text(self._eval(a), "Fn::Cidr") for a in arg)
        try:
            network = ipaddress.ip_network(block, strict=False)
            prefix = network.max_prefixlen - int(bits)
            subnets = [str(s) for _, s in zip(range(int(count)), network.subnets(new_prefix=prefix), strict=False)]
        except ValueError as e:
            raise TemplateError(f"Fn::Cidr: {e}: {expression!r}") from e
        if not 1 <= int(count) <= 256 or len(subnets) < int(count):
            raise TemplateError(f"Fn::Cidr: {block} has no {count} subnets of /{prefix}: {expression!r}")
        return subnets

    def _dynamic_references(self, value: Any) -> Any:
        if isinstance(value, str):
            if "{{resolve:" not in value:
                return value
            return _DYNAMIC_REFERENCE.sub(lambda m: self._dynamic_value(m.group(1), m.group(2)), value)
        if isinstance(value, list):
            return [self._dynamic_references(v) for v in value]
        if isinstance(value, dict):
            return {k: self._dynamic_references(v) for k, v in value.items()}
        return value

    def _dynamic_value(self, service: str, reference: str) -> str:
        expression = f"{{{{resolve:{service}:{reference}}}}}"
        if service not in _DYNAMIC_SERVICES:
            raise TemplateError(f"unsupported dynamic reference {expression}")
        if (service, reference) not in self._dynamic_values:
            if self.dynamic is None:
                raise TemplateError(f"{expression} needs a dynamic-reference lookup: Template(..., dynamic=...)")
            try:
                self._dynamic_values[service, reference] = self.dynamic(service, reference)
            except LookupError as e:
                raise TemplateError(f"{expression}: not found ({e})") from e
        return self._dynamic_values[service, reference]

    # ------------------------------------------------------------ provisioning order

    def deployment_order(self) -> list[str]:
        """The active resources in an order a provisioner can create them in (after :meth:`validate`).

        A resource comes after everything it names with ``Ref``, ``Fn::GetAtt``, ``Fn::Sub`` (its SAM
        ``Globals`` included) or ``DependsOn``; dynamic references are read at creation and add nothing.
        Among resources free to go, template order decides. A cycle raises, naming it.
        """
        self.validate()
        active = self.active_resources()
        needs = {logical_id: self._dependencies(logical_id, res, active) for logical_id, res in active.items()}
        order: list[str] = []
        remaining = list(active)
        while remaining:
            ready = next((r for r in remaining if needs[r] <= set(order)), None)
            if ready is None:
                raise TemplateError(f"dependency cycle: {' -> '.join(_cycle(remaining, needs))}")
            order.append(ready)
            remaining.remove(ready)
        return order

    def _dependencies(self, logical_id: str, resource: dict[str, Any], active: dict[str, Any]) -> set[str]:
        named: set[str] = set()
        section = _SAM_GLOBALS.get(str(resource.get("Type")))
        if section is not None:
            self._names(self.doc.get("Globals", {}).get(section, {}), named)
        self._names(resource.get("Properties", {}), named)
        depends_on = resource.get("DependsOn", [])
        for name in [depends_on] if isinstance(depends_on, str) else depends_on:
            if name not in self.doc["Resources"]:
                raise TemplateError(f"{logical_id} DependsOn {name}, which is not a resource of the template")
            named.add(name)
        out: set[str] = set()
        for name in named:
            if name.startswith("AWS::") or name in self.doc.get("Parameters", {}):
                continue
            target = name if name in self.doc["Resources"] else self.generated_by(name)
            if target is None:
                raise TemplateError(f"{logical_id} refers to {name}: {self._missing(name)}")
            if target not in active:
                raise TemplateError(f"{logical_id} refers to {name}: {self._missing(target)}")
            if target != logical_id or name == logical_id:
                out.add(target)
        return out

    def _names(self, value: Any, out: set[str]) -> None:
        """Every name ``value`` refers to with Ref, Fn::GetAtt or Fn::Sub (taken Fn::If branches only)."""
        if isinstance(value, list):
            for v in value:
                self._names(v, out)
            return
        if not isinstance(value, dict):
            return
        call = _intrinsic(value)
        if call is None:
            for v in value.values():
                self._names(v, out)
            return
        key, arg = call
        if key == "Ref" and isinstance(arg, str):
            out.add(arg)
        elif key == "Fn::GetAtt":
            out.add(arg.partition(".")[0] if isinstance(arg, str) else str(arg[0]))
            self._names(arg[1:] if isinstance(arg, list) else [], out)
        elif key == "Fn::Sub":
            text, variables = _sub_argument(arg)
            out.update(p.partition(".")[0] for p, is_name in _sub_parts(text) if is_name and p not in variables)
            self._names(variables, out)
        elif key == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
            self._names(arg[1] if self.condition(arg[0]) else arg[2], out)
        elif key != "Condition":
            self._names(arg, out)


def _condition_names(value: Any) -> Iterator[str]:
    """The conditions an expression names with ``Condition`` (or ``Fn::If``)."""
    if isinstance(value, list):
        for v in value:
            yield from _condition_names(v)
    elif isinstance(value, dict):
        call = _intrinsic(value)
        if call is not None and call[0] == "Condition":
            yield call[1]
        elif call is not None and call[0] == "Fn::If" and isinstance(call[1], list) and call[1]:
            yield str(call[1][0])
            yield from _condition_names(call[1][1:])
        else:
            yield from _condition_names(list(value.values()))


def _condition_cycle(conditions: dict[str, Any], name: str, path: list[str]) -> None:
    """Refuse conditions that refer to each other (checked statically: no state, so threads may share a Template)."""
    if name in path:
        raise TemplateError(f"conditions refer to each other: {' -> '.join([*path, name])}")
    for named in _condition_names(conditions.get(name)):
        _condition_cycle(conditions, named, [*path, name])


def _cycle(remaining: list[str], needs: dict[str, set[str]]) -> list[str]:
    """One dependency cycle among resources none of which can go first (each needs another of them)."""
    path = [remaining[0]]
    while True:
        step = next(r for r in remaining if r in needs[path[-1]])
        if step in path:
            return [*path[path.index(step) :], step]
        path.append(step)


# ---------------------------------------------------------------- samconfig.toml

# SAM CLI's parameter_overrides grammar (samcli.cli.types.CfnParameterOverridesType): "Key=Value" or
# "ParameterKey=Key,ParameterValue=Value", space separated, values optionally quoted with \-escapes.
_OVERRIDE_KEY = r"""([A-Za-z0-9"']+)"""
_OVERRIDE_VALUE = r"""("(?:\\.|[^"\\]+)*"|'(?:\\.|[^'\\]+)*'|(?:\\.|[^ "\\]+)+)"""
_OVERRIDE_FORMS = (
    re.compile(rf"ParameterKey={_OVERRIDE_KEY},ParameterValue={_OVERRIDE_VALUE}"),
    re.compile(rf" {_OVERRIDE_KEY}={_OVERRIDE_VALUE}"),
)


def _unquote(value: str) -> str:
    if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value.replace("\\ ", " ").replace('\\"', '"').replace("\\'", "'")


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def parse_parameter_overrides(value: Any, where: str = "parameter_overrides") -> dict[str, str]:
    """``parameter_overrides`` as SAM CLI reads it: a string, a list of strings, or a table.

    Unlike SAM CLI, text that is not a ``Key=Value`` pair is refused instead of silently skipped.
    """
    found: dict[str, str] = {}
    for item in _flatten(value):
        if item is None or item == "":
            continue
        if isinstance(item, dict):
            for k, v in item.items():
                if isinstance(v, list):
                    found[str(k)] = ",".join(_text(x, where).strip() for x in v if x not in (None, ""))
                else:
                    found[str(k)] = "" if v is None else _text(v, where)
            continue
        if not isinstance(item, str) or item.startswith("file://"):
            raise TemplateError(f"{where}: unsupported entry {item!r}")
        text = " " + item.strip()
        for form in _OVERRIDE_FORMS:
            pairs = form.findall(text)
            if pairs:
                break
        if not pairs or form.sub("", text).strip():
            raise TemplateError(f"{where}: {item!r} is not 'Key=Value' (or ParameterKey=Key,ParameterValue=Value)")
        found.update(pairs)
    return {_unquote(k): _unquote(v) for k, v in found.items()}


@dataclass(frozen=True)
class SamConfig:
    """One config env of samconfig.toml, as ``sam deploy --config-env <env>`` reads it.

    ``parameters`` are the parameter overrides as CloudFormation receives them (SSM-typed parameters
    carry SSM parameter names); ``template_file`` is absolute. ``deploy.parameters`` win over
    ``global.parameters``, as in SAM CLI; no other env (not even ``default``) is consulted. ``resolve_s3``
    and ``s3_bucket`` say where ``sam deploy`` uploads packages and the template (a template body over
    CloudFormation's 51,200 bytes can only be deployed from S3).
    """

    env: str
    stack_name: str
    region: str
    template_file: Path
    parameters: dict[str, str] = field(hash=False)
    resolve_s3: bool = False
    s3_bucket: str = ""

    def template(self, **kwargs: Any) -> Template:
        """The env's template with its parameters, region and stack name (plus ``physical``, ``ssm``, ...)."""
        return Template.from_file(
            self.template_file, parameters=dict(self.parameters), region=self.region, stack_name=self.stack_name,
            **kwargs,
        )  # fmt: skip


def _samconfig_document(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TemplateError(f"cannot read {path}: {e}") from e


def samconfig_envs(path: Path = SAMCONFIG) -> list[str]:
    """The config envs that can deploy (have ``[<env>.deploy.parameters]``), in file order."""
    doc = _samconfig_document(path)
    return [env for env, section in doc.items() if isinstance(section, dict) and "deploy" in section]


def samconfig_parameters(env: str, path: Path = SAMCONFIG) -> SamConfig:
    """The stack name, region, template and parameter overrides of one samconfig.toml config env."""
    section = _samconfig_document(path).get(env)
    if not isinstance(section, dict) or "deploy" not in section:
        raise TemplateError(f"{path} has no [{env}.deploy.parameters]")
    settings: dict[str, Any] = {
        **section.get("global", {}).get("parameters", {}),
        **section["deploy"].get("parameters", {}),
    }
    for required in ("stack_name", "region"):
        if not settings.get(required):
            raise TemplateError(f"{path} [{env}]: no {required}")
    return SamConfig(
        env=env,
        stack_name=str(settings["stack_name"]),
        region=str(settings["region"]),
        template_file=(path.parent / str(settings.get("template_file", "template.yaml"))).resolve(),
        parameters=parse_parameter_overrides(settings.get("parameter_overrides"), f"{path} [{env}]"),
        resolve_s3=settings.get("resolve_s3") is True,
        s3_bucket=str(settings.get("s3_bucket") or ""),
    )

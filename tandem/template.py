"""Reads our CloudFormation/SAM templates so local runs take names and settings from them, not a copy.

A small resolver covers what local provisioning needs: ``Ref`` to parameters and pseudo parameters,
``Fn::Sub`` over those, ``Fn::If``/``Fn::Equals`` over conditions, ``Fn::Join``, ``Fn::Select``.
Anything else raises, naming the expression, rather than guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_TEMPLATE = ROOT / "template.yaml"
GLOBAL_TEMPLATE = ROOT / "infra_global" / "template.yaml"


class TemplateError(ValueError):
    pass


class _CfnLoader(yaml.SafeLoader):
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
    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass with CFN tags only
    if not isinstance(doc, dict) or "Resources" not in doc:
        raise TemplateError(f"{path} is not a CloudFormation template")
    return doc


@dataclass
class Template:
    """A loaded template plus the parameter values of one deployment (one region)."""

    doc: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"
    #: what provisioning created: logical id -> {"Ref": physical id, "<Attribute>": value, ...}
    physical: dict[str, dict[str, str]] = field(default_factory=dict)

    def resources_of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.doc["Resources"].items() if v.get("Type") == cfn_type}

    @classmethod
    def from_file(cls, path: Path = APP_TEMPLATE, **kwargs: Any) -> Template:
        return cls(load(path), **kwargs)

    def resource(self, logical_id: str) -> dict[str, Any]:
        try:
            res: dict[str, Any] = self.doc["Resources"][logical_id]
        except KeyError:
            raise TemplateError(f"resource {logical_id!r} is not in the template") from None
        return res

    def properties(self, logical_id: str) -> dict[str, Any]:
        props: dict[str, Any] = self.resource(logical_id).get("Properties", {})
        return props

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The function's Environment.Variables (Globals merged), resolved for this deployment."""
        merged: dict[str, Any] = {}
        merged.update(self.doc.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
        merged.update(self.properties(logical_id).get("Environment", {}).get("Variables", {}))
        return {k: str(self.resolve(v)) for k, v in merged.items()}

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        spec = self.doc.get("Parameters", {}).get(name)
        if spec is None:
            raise TemplateError(f"parameter {name!r} is not declared in the template")
        if "Default" not in spec:
            raise TemplateError(f"parameter {name!r} has no default and no local value")
        default = spec["Default"]
        return ",".join(map(str, default)) if isinstance(default, list) else str(default)

    def condition(self, name: str) -> bool:
        try:
            return bool(self.resolve(self.doc["Conditions"][name]))
        except KeyError:
            raise TemplateError(f"condition {name!r} is not declared") from None

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v) for k, v in value.items()}
        ((key, arg),) = value.items()
        match key:
            case "Ref":
                return self._ref(str(arg))
            case "Fn::Sub":
                return self._sub(arg)
            case "Fn::If":
                name, yes, no = arg
                return self.resolve(yes if self.condition(name) else no)
            case "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            case "Fn::Not":
                return not self.resolve(arg[0])
            case "Fn::And":
                return all(self.resolve(x) for x in arg)
            case "Fn::Or":
                return any(self.resolve(x) for x in arg)
            case "Condition":
                return self.condition(str(arg))
            case "Fn::Join":
                sep, parts = arg
                return str(sep).join(str(self.resolve(p)) for p in self.resolve(parts))
            case "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
                try:
                    return self.physical[logical][attribute]
                except KeyError:
                    raise TemplateError(f"cannot resolve Fn::GetAtt locally: {logical}.{attribute}") from None
            case "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            case _ if key.startswith("Fn::") or key == "Ref":
                raise TemplateError(f"cannot resolve {key} locally: {value!r}")
        return {key: self.resolve(arg)}

    def _ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": self.region, "AWS::AccountId": self.account, "AWS::Partition": "aws",
            "AWS::StackName": f"tandem-local-{self.region}", "AWS::URLSuffix": "amazonaws.com",
        }  # fmt: skip
        if name in pseudo:
            return pseudo[name]
        if name in self.physical:
            return self.physical[name]["Ref"]
        if name in self.doc.get("Resources", {}):
            raise TemplateError(f"cannot resolve Ref {name} locally: resource not provisioned")
        return self.parameter(name)

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, variables = arg, {}
        out, i = [], 0
        while i < len(text):
            start = text.find("${", i)
            if start < 0:
                out.append(text[i:])
                break
            out.append(text[i:start])
            end = text.index("}", start)
            name = text[start + 2 : end]
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in variables:
                out.append(str(variables[name]))
            elif "." in name:
                raise TemplateError(f"cannot resolve ${{{name}}} locally")
            else:
                out.append(self._ref(name))
            i = end + 1
        return "".join(out)

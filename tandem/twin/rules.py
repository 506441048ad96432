"""EventBridge rules the template declares, as the twin provisions them.

Two places declare them in SAM: a function's ``Events`` of type ``Schedule`` / ``ScheduleV2`` (a schedule
expression) or ``EventBridgeRule`` / ``CloudWatchEvent`` (an event pattern), and plain ``AWS::Events::Rule``
resources whose ``Targets`` name a function. Both become a rule plus a target with the function's ARN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tandem.template import Template, TemplateError


@dataclass(frozen=True)
class RuleSpec:
    name: str
    target_arn: str
    schedule: str | None = None
    pattern: str | None = None  # JSON
    enabled: bool = True

    def put_rule_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"Name": self.name, "State": "ENABLED" if self.enabled else "DISABLED"}
        if self.schedule:
            args["ScheduleExpression"] = self.schedule
        if self.pattern:
            args["EventPattern"] = self.pattern
        return args


def rules_of_function(tpl: Template, logical: str, arn: str) -> list[RuleSpec]:
    """The rules a SAM function declares in its ``Events`` (schedules and event patterns)."""
    specs: list[RuleSpec] = []
    for event_name, event in tpl.properties(logical).get("Events", {}).items():
        kind, props = event.get("Type"), event.get("Properties", {})
        # SAM names a schedule's rule with Name, an event pattern's with RuleName
        name = str(tpl.resolve(props.get("Name", props.get("RuleName", f"{logical}-{event_name}"))))
        if kind in {"Schedule", "ScheduleV2"}:
            expression = props.get("Schedule") or props.get("ScheduleExpression")
            enabled = _enabled(tpl, props)
            specs.append(RuleSpec(name, arn, schedule=str(tpl.resolve(expression)), enabled=enabled))
        elif kind in {"EventBridgeRule", "CloudWatchEvent"}:
            pattern = json.dumps(tpl.resolve(props["Pattern"]))
            specs.append(RuleSpec(name, arn, pattern=pattern, enabled=_enabled(tpl, props)))
    return specs


def rules_from_template(tpl: Template, function_arns: dict[str, str]) -> list[RuleSpec]:
    """Every rule the template declares; ``function_arns`` maps a function's logical id to its ARN."""
    specs: list[RuleSpec] = []
    for logical, arn in function_arns.items():
        specs += rules_of_function(tpl, logical, arn)
    arn_of_ref = {logical: arn for logical, arn in function_arns.items()}
    for logical, resource in tpl.resources_of_type("AWS::Events::Rule").items():
        props = resource.get("Properties", {})
        for target in props.get("Targets", []):
            target_logical = _target_logical(target.get("Arn"))
            if target_logical not in arn_of_ref:
                continue
            specs.append(
                RuleSpec(
                    str(tpl.resolve(props.get("Name", logical))),
                    arn_of_ref[target_logical],
                    schedule=str(tpl.resolve(props["ScheduleExpression"])) if "ScheduleExpression" in props else None,
                    pattern=json.dumps(tpl.resolve(props["EventPattern"])) if "EventPattern" in props else None,
                    enabled=str(tpl.resolve(props.get("State", "ENABLED"))) == "ENABLED",
                )
            )
    return specs


def _enabled(tpl: Template, props: dict[str, Any]) -> bool:
    if "Enabled" in props:
        return bool(tpl.resolve(props["Enabled"]))
    return str(tpl.resolve(props.get("State", "ENABLED"))) == "ENABLED"


def _target_logical(arn: Any) -> str | None:
    """The logical id behind a target's ``!GetAtt Fn.Arn`` (the only form a template can use for ours)."""
    if isinstance(arn, dict) and "Fn::GetAtt" in arn:
        value = arn["Fn::GetAtt"]
        return str(value[0] if isinstance(value, list) else str(value).split(".", 1)[0])
    if isinstance(arn, dict) and "Ref" in arn:
        raise TemplateError("a rule target must be a function ARN (!GetAtt Fn.Arn), not a Ref")
    return None

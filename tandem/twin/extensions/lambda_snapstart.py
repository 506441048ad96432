"""Lambda's SnapStart setting, kept and answered as Lambda does (moto 5.2.5 answers ``ApplyOn: None`` whatever
CreateFunction or UpdateFunctionConfiguration set), so a client sees which configuration an alias runs.

``ApplyOn`` is the function's; ``OptimizationStatus`` is ``On`` for a version published with
``PublishedVersions`` and ``Off`` for ``$LATEST``, as Lambda reports them.
"""

from __future__ import annotations

import functools
from typing import Any

from moto.awslambda.models import LambdaFunction

from tandem import moto_ext

_ATTRIBUTE = "tandem_snap_start"


def _apply_on(setting: Any) -> str:
    return str((setting or {}).get("ApplyOn", "None"))


@functools.cache
def install() -> None:
    """Wrap moto's LambdaFunction to keep SnapStart (idempotent); publish_version copies it with the function."""
    moto_ext.apply()
    init, update, configuration = (
        LambdaFunction.__init__, LambdaFunction.update_configuration, LambdaFunction.get_configuration
    )  # fmt: skip

    def __init__(
        self: LambdaFunction, account_id: str, spec: dict[str, Any], region: str, version: str | int = 1
    ) -> None:
        init(self, account_id, spec, region, version)
        setattr(self, _ATTRIBUTE, _apply_on(spec.get("SnapStart")))

    def update_configuration(self: LambdaFunction, config_updates: dict[str, Any]) -> dict[str, Any]:
        if "SnapStart" in config_updates:
            setattr(self, _ATTRIBUTE, _apply_on(config_updates["SnapStart"]))
        return update(self, config_updates)

    def get_configuration(self: LambdaFunction, on_create: bool = False) -> dict[str, Any]:
        config = configuration(self, on_create)
        apply_on = getattr(self, _ATTRIBUTE, "None")
        optimized = apply_on == "PublishedVersions" and str(self.version) != "$LATEST"
        config["SnapStart"] = {"ApplyOn": apply_on, "OptimizationStatus": "On" if optimized else "Off"}
        return config

    LambdaFunction.__init__ = __init__  # type: ignore[method-assign]
    LambdaFunction.update_configuration = update_configuration  # type: ignore[method-assign]
    LambdaFunction.get_configuration = get_configuration  # type: ignore[method-assign]

"""One way to turn a pydantic ValidationError into a one-line reason an operator can act on."""

from __future__ import annotations

from pydantic import ValidationError


def describe(exc: ValidationError, root: str) -> str:
    """``loc: msg; loc: msg`` without pydantic's ``Value error, `` prefix; ``root`` names a model-level error."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or root}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors(include_url=False, include_input=False)
    )

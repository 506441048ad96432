"""Runs in the SAM tool venv (``.tools/sam``), not in the project's: ``aws-sam-translator`` pins a pydantic
the project's runtime cannot share. Reads one JSON request on stdin, writes one JSON answer on stdout.

Request: ``{"template": {...}, "parameters": {...}, "managed_policies": {...} | null}``.
Answer: ``{"template": {...}}`` or ``{"error": "..."}`` (the message CloudFormation shows for a failed
transform). Standard library and the translator only: this file never imports the project.
"""

import json
import sys


def main() -> int:
    from samtranslator.model.exceptions import (  # type: ignore[import-not-found]
        InvalidDocumentException,
        InvalidTemplateException,
    )
    from samtranslator.translator.transform import transform  # type: ignore[import-not-found]

    request = json.load(sys.stdin)
    policies = request.get("managed_policies")

    class Policies:
        """The managed-policy name -> ARN map the translator asks for when a function names one."""

        def load(self) -> dict[str, str]:
            if policies is None:
                raise InvalidTemplateException("a managed policy is named by name, and no policy map was given")
            return dict(policies)

    try:
        out = transform(request["template"], request["parameters"], Policies())
    except InvalidDocumentException as error:
        causes = " ".join(str(c.message) for c in error.causes)
        json.dump({"error": f"{error.message} {causes}".strip()}, sys.stdout)
        return 0
    except InvalidTemplateException as error:
        json.dump({"error": str(error.message)}, sys.stdout)
        return 0
    json.dump({"template": out}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs in the SAM tool venv (``.tools/sam``), not in the project's: ``aws-sam-translator`` pins a pydantic
the project's runtime cannot share. Reads one JSON request per line on stdin and writes one JSON answer per
line on stdout, until stdin closes: one process serves a twin's every deploy (importing the translator is
most of the cost of a translation).

Request: ``{"template": {...}, "parameters": {...}, "managed_policies": {...} | null}``.
Answer: ``{"template": {...}}`` or ``{"error": "..."}`` (the message CloudFormation shows for a failed
transform). Standard library and the translator only: this file never imports the project.
"""

import json
import sys


def translate(request: dict) -> dict:  # type: ignore[type-arg]
    from samtranslator.model.exceptions import (  # type: ignore[import-not-found]
        InvalidDocumentException,
        InvalidTemplateException,
    )
    from samtranslator.translator.transform import transform  # type: ignore[import-not-found]

    policies = request.get("managed_policies")

    class Policies:
        """The managed-policy name -> ARN map the translator asks for when a function names one."""

        def load(self) -> dict[str, str]:
            if policies is None:
                raise InvalidTemplateException("a managed policy is named by name, and no policy map was given")
            return dict(policies)

    try:
        return {"template": transform(request["template"], request["parameters"], Policies())}
    except InvalidDocumentException as error:
        causes = " ".join(str(c.message) for c in error.causes)
        return {"error": f"{error.message} {causes}".strip()}
    except InvalidTemplateException as error:
        return {"error": str(error.message)}


def main() -> int:
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(translate(json.loads(line))) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

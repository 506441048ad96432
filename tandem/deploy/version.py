"""When the processor publishes a new version: ``ProcessorVersionKey`` (the app's ``AutoPublishCodeSha256``).

SAM's own hash sees the template as written, so a changed SSM value or ``ProcessorSnapStart`` would publish
no version and the ``live`` alias would keep the old configuration. The key is a hash of the code packages
and of every parameter value as CloudFormation will resolve it; every deploy path computes it the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from tandem.template import ROOT, TemplateError

VERSION_KEY = "ProcessorVersionKey"


def version_key(ssm: Any, doc: dict[str, Any], parameters: dict[str, str], uris: dict[str, str]) -> str:
    """``uris``: each function's code package (logical id -> S3 URI); ``ssm``: a client of the stack's region,
    which reads an SSM-typed parameter's value as CloudFormation will when it creates the change set."""
    declared = doc.get("Parameters") or {}
    values = {}
    for key, spec in declared.items():
        value = parameters.get(key, spec.get("Default", ""))
        if str(spec.get("Type", "")).startswith("AWS::SSM::Parameter::Value") and value:
            value = ssm.get_parameter(Name=str(value))["Parameter"]["Value"]
        values[key] = value
    values.pop(VERSION_KEY, None)
    text = json.dumps({"code": uris, "parameters": values}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def needs_key(doc: dict[str, Any]) -> bool:
    return VERSION_KEY in (doc.get("Parameters") or {})


def code_packages(doc: dict[str, Any], base: Path) -> dict[str, bytes]:
    """Each function's local ``CodeUri`` as a deterministic zip (what ``sam package`` uploads; its hash names
    the code in the version key). A CodeUri is read relative to the template, as SAM CLI reads it; for an
    edited copy of the repository's template written elsewhere (tests do that) the repository is the fallback."""
    packages: dict[str, bytes] = {}
    for logical_id, resource in (doc.get("Resources") or {}).items():
        code = (resource.get("Properties") or {}).get("CodeUri")
        if resource.get("Type") != "AWS::Serverless::Function" or not isinstance(code, str) or code.startswith("s3:"):
            continue
        directory = next((d for d in (base / code, ROOT / code) if d.is_dir()), None)
        if directory is None:
            raise TemplateError(f"{logical_id}: CodeUri {code!r} is not a directory")
        packages[logical_id] = zip_directory(directory)
    return packages


def zip_directory(directory: Path) -> bytes:
    """A deterministic zip of ``directory`` (sorted names, fixed timestamps, no bytecode caches)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            info = zipfile.ZipInfo(str(path.relative_to(directory)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buf.getvalue()

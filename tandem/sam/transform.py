"""The ``AWS::Serverless-2016-10-31`` transform, applied by AWS's own ``aws-sam-translator``.

CloudFormation runs this transform on every change set of a template that declares it; so does the twin,
with the same library. ``aws-sam-translator`` pins a pydantic the project's runtime cannot share, so it runs
in the SAM CLI's tool venv (``.tools/sam``, the version ``aws-sam-cli`` itself pins) as a child process,
and its output is cached by everything that determines it (template, parameter values, region, account,
the tool venv's pins): a twin start-up translates each template once per change, not once per stack.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tandem.template import ROOT, TemplateError

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
TOOL_PYTHON = ROOT / ".tools" / "sam" / "bin" / "python"
TOOL_PINS = ROOT / "requirements" / "tools-sam.txt"
CHILD = Path(__file__).with_name("translator_child.py")
CACHE_DIR = ROOT / ".tandem" / "cache" / "sam-transform"


class TransformError(TemplateError):
    """The transform refused the template: CloudFormation fails the change set with this message."""


def declares_sam(template: Mapping[str, Any]) -> bool:
    transform = template.get("Transform")
    names = transform if isinstance(transform, list) else [transform]
    return SAM_TRANSFORM in names


def translate(
    template: Mapping[str, Any],
    parameters: Mapping[str, Any],
    *,
    region: str,
    account: str,
    managed_policies: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The plain CloudFormation that ``template`` becomes, for a stack in ``region`` of ``account``.

    ``parameters`` are the values the stack is created with (CloudFormation hands them to the transform);
    ``managed_policies`` maps AWS managed policy names to ARNs, needed only when a function names one.
    """
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    request = {
        "template": template,
        "parameters": {**parameters, "AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": partition},
        "managed_policies": dict(managed_policies) if managed_policies is not None else None,
    }
    text = json.dumps(request, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode() + _pins_digest().encode()).hexdigest()
    return copy.deepcopy(_cached(key, text))


@functools.lru_cache(maxsize=64)
def _cached(key: str, request: str) -> dict[str, Any]:
    path = CACHE_DIR / f"{key}.json"
    try:
        answer = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        answer = _run(request)
        if "template" in answer:  # a refusal is not cached: the same input is refused again, quickly enough
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(answer), encoding="utf-8")
            tmp.replace(path)
    if "error" in answer:
        raise TransformError(f"Transform {SAM_TRANSFORM} failed with: {answer['error']}")
    template: dict[str, Any] = answer["template"]
    return template


class _Translator:
    """One translator process for this process's life (started on first use, started again if it died)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def run(self, request: str) -> dict[str, Any]:
        with self._lock:
            for attempt in (1, 2):
                process = self._started()
                assert process.stdin is not None
                assert process.stdout is not None
                try:
                    process.stdin.write(request.replace("\n", " ") + "\n")
                    process.stdin.flush()
                    line = process.stdout.readline()
                except OSError:
                    line = ""
                if line:
                    answer: dict[str, Any] = json.loads(line)
                    return answer
                self._stop(process)
                if attempt == 2:
                    raise TemplateError(f"the SAM translator stopped (exit {process.returncode}); see stderr above")
        raise AssertionError("unreachable")

    def _started(self) -> subprocess.Popen[str]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        if not TOOL_PYTHON.exists():
            raise TemplateError(f"the SAM tool venv is missing ({TOOL_PYTHON}): run `make tools`")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env |= {"AWS_DEFAULT_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"}
        self._process = subprocess.Popen(  # our own script, run by our own tool venv's interpreter
            [str(TOOL_PYTHON), "-I", str(CHILD)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env,
        )  # fmt: skip
        atexit.register(self._stop, self._process)
        return self._process

    @staticmethod
    def _stop(process: subprocess.Popen[str]) -> None:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process.poll() is None:
            process.kill()


_translator = _Translator()


def _run(request: str) -> dict[str, Any]:
    return _translator.run(request)


@functools.lru_cache(maxsize=1)
def _pins_digest() -> str:
    return hashlib.sha256(TOOL_PINS.read_bytes()).hexdigest()


def with_code_at(template: Mapping[str, Any], uri: Mapping[str, str]) -> dict[str, Any]:
    """``template`` as ``sam package`` leaves it: each function's local ``CodeUri`` replaced by ``uri[logical
    id]`` (an ``s3://`` location of its uploaded package). A function missing from ``uri`` is an error."""
    out = copy.deepcopy(dict(template))
    for logical_id, resource in out.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.setdefault("Properties", {})
        if isinstance(props.get("CodeUri"), str) and not props["CodeUri"].startswith("s3://"):
            if logical_id not in uri:
                raise TemplateError(f"{logical_id}: no uploaded package for CodeUri {props['CodeUri']!r}")
            props["CodeUri"] = uri[logical_id]
    return out

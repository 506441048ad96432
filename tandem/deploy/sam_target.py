"""The plan's steps run by the real SAM CLI: ``sam build`` (AWS), ``sam package``, ``sam deploy --config-env``.

The same commands reach AWS (a ``--profile`` or the default credential chain) and the twin (each region's
endpoint as ``AWS_ENDPOINT_URL``, see :mod:`tandem.sam.cli`). samconfig.toml's env supplies what it always
does (capabilities, resolve_s3, s3_prefix, tags); ``--parameter-overrides`` replaces the env's list, so the
plan passes every value, ``ProcessorVersionKey`` included (a hash of each function's code, as packaged, and
of the values CloudFormation will resolve). For the twin the app is not built: the twin runs functions from
their sources with its own interpreter, where ``sam build`` fetches Lambda's (arm64) wheels.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tandem.deploy.plan import DeployError, Step
from tandem.deploy.version import VERSION_KEY, code_packages, needs_key, version_key
from tandem.sam.cli import sam
from tandem.sam.transform import declares_sam
from tandem.status import ClientSource
from tandem.template import ROOT, SAMCONFIG, load

BUILT_TEMPLATE = ROOT / ".aws-sam" / "build" / "template.yaml"


class SamCliTarget:
    """AWS (``endpoints`` None) or the twin (region -> its API endpoint), deployed by the pinned SAM CLI."""

    def __init__(
        self,
        clients: ClientSource,
        *,
        endpoints: Mapping[str, str] | None = None,
        profile: str | None = None,
        config_file: Path = SAMCONFIG,
    ) -> None:
        self._clients = clients
        self._endpoints = dict(endpoints) if endpoints is not None else None
        self._profile = profile
        self._config_file = config_file.resolve()
        self._built: dict[Path, Path] = {}
        self.requires_custom_domain = endpoints is None  # the twin serves its ingress on loopback, without TLS

    def client(self, region: str, service: str) -> Any:
        return self._clients.client(region, service)

    def deploy(self, step: Step, parameters: dict[str, str], *, dry_run: bool) -> None:
        template, values = step.template, dict(parameters)
        doc = load(template)
        if declares_sam(doc):
            template = self._build(template)
            if needs_key(doc):
                code = {
                    k: hashlib.sha256(z).hexdigest() for k, z in code_packages(load(template), template.parent).items()
                }
                values[VERSION_KEY] = version_key(self.client(step.region, "ssm"), doc, values, code)
        args = ["deploy", "--config-env", step.env, "--config-file", str(self._config_file),
                "--template-file", str(template), "--stack-name", step.stack, "--region", step.region,
                "--no-confirm-changeset", "--no-fail-on-empty-changeset", "--no-progressbar"]  # fmt: skip
        if dry_run:
            args.append("--no-execute-changeset")
        given = [f"{k}={v}" for k, v in values.items() if v != ""]  # empty: the template's default
        if given:
            args += ["--parameter-overrides", *given]
        self._sam(args, step)

    def _build(self, template: Path) -> Path:
        """``sam build`` of template.yaml once, for AWS (scripts/build.sh: Python 3.12, bytecode); the twin: as is."""
        if self._endpoints is not None:
            return template
        if template not in self._built:
            done = subprocess.run(  # our own build script
                ["bash", str(ROOT / "scripts" / "build.sh")],
                cwd=ROOT, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise DeployError(f"sam build failed: {_last_error(done.stdout + done.stderr)}")
            self._built[template] = BUILT_TEMPLATE
        return self._built[template]

    def _sam(self, args: Sequence[str], step: Step) -> str:
        endpoint = None if self._endpoints is None else self._endpoints[step.region]
        done = sam(args, endpoint=endpoint, profile=self._profile)
        if done.returncode != 0:
            raise DeployError(
                f"step {step.number} ({step.env}): sam {args[0]} failed: {_last_error(done.stdout + done.stderr)}"
            )
        return done.stdout + done.stderr


def _last_error(text: str) -> str:
    """SAM CLI's own error line (``Error: ...``), else its last lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return " ".join(errors[-2:] or lines[-3:])

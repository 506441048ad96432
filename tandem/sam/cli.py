"""The real SAM CLI (the pinned ``aws-sam-cli`` in its tool venv), run against AWS or a twin region's endpoint.

Against the twin the only differences are the standard ones: ``AWS_ENDPOINT_URL`` names the region's
emulator endpoint and the credentials are the emulator's. SAM CLI's telemetry is off and its weekly
version check is marked done (in a config directory of its own), so a run talks to nothing but the target.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tandem.template import ROOT

SAM = ROOT / ".tools" / "sam" / "bin" / "sam"
TWIN_POLL_DELAY = "0.2"  # seconds between SAM CLI's DescribeChangeSet / DescribeStackEvents polls of the twin


def sam(
    args: Sequence[str], *, endpoint: str | None = None, profile: str | None = None, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    """``sam <args>`` in the repository's directory; ``endpoint``: a twin region's API endpoint (else AWS)."""
    if not SAM.exists():
        raise FileNotFoundError(f"the SAM CLI is not installed ({SAM}): run `make tools`")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAM_CLI_", "__SAM_CLI"))}
    with tempfile.TemporaryDirectory(prefix="tandem-sam-") as app_dir:
        Path(app_dir, "metadata.json").write_text(
            json.dumps({"telemetryEnabled": False, "lastVersionCheck": time.time()}), encoding="utf-8"
        )
        env |= {"SAM_CLI_TELEMETRY": "0", "__SAM_CLI_APP_DIR": app_dir}
        if endpoint is not None:
            env |= {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
            # SAM CLI's own setting: it polls the change set and the stack's events every 5 s, spacing that
            # spares CloudFormation's API limits in AWS; the twin's CloudFormation decides in well under a second
            env["SAM_CLI_POLL_DELAY"] = TWIN_POLL_DELAY
        elif profile is not None:
            env["AWS_PROFILE"] = profile
        return subprocess.run(  # the pinned SAM CLI of the tool venv
            [str(SAM), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

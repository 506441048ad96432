#!/usr/bin/env bash
# Builds the SAM app into .aws-sam/build with the pinned SAM CLI (.tools/sam). Extra arguments go to
# `sam build` (e.g. --config-env dr). No Docker: the Python 3.12 interpreter that matches the Lambda
# runtime goes first on PATH, and SAM's pip builder fetches arm64 (manylinux aarch64) wheels for
# src/requirements.txt, so the build works on an x86_64 machine too. Then every function's modules are
# compiled to bytecode by that same 3.12 (scripts/bytecode.py) and the artifact is checked for it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-tools.sh
export SAM_CLI_TELEMETRY=0

if command -v pyenv >/dev/null 2>&1 && pyenv prefix 3.12.1 >/dev/null 2>&1; then
  PATH="$(pyenv prefix 3.12.1)/bin:$PATH"
elif ! command -v python3.12 >/dev/null 2>&1; then
  echo "python3.12 not found (install it or pyenv 3.12.1)" >&2
  exit 1
fi
export PATH

.tools/sam/bin/sam build --template-file template.yaml --build-dir .aws-sam/build "$@"
# Lambda's /var/task is read-only: ship a .pyc (Python 3.12, unchecked-hash) for every module, then prove it.
python3.12 scripts/bytecode.py compile .aws-sam/build
python3.12 scripts/bytecode.py check .aws-sam/build

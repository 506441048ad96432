#!/usr/bin/env bash
# Creates the tool virtualenvs, kept apart from the project venv (.venv) because these tools pin older
# boto3/pydantic/click than the project uses:
#   .tools/sam      aws-sam-cli + cfn-lint   (requirements/tools-sam.txt)
#   .tools/checkov  checkov                  (requirements/tools-checkov.txt)
# Python 3.12 like the Lambda runtime. Idempotent: a venv is (re)installed only when its pinned requirements
# changed since the last successful install (stamp file), so a second run takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

export UV_PYTHON_DOWNLOADS=never
mkdir -p .tools
# Serialise concurrent runs (e.g. `make -j lint build`): both would otherwise build the same venv.
if command -v flock >/dev/null 2>&1; then
  exec 9>.tools/.lock
  flock 9
fi

# install_tool NAME: .tools/NAME from requirements/tools-NAME.txt
install_tool() {
  local name=$1
  local venv=.tools/$name req=requirements/tools-$name.txt
  local stamp=$venv/.installed
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    return 0
  fi
  echo "setup-tools: installing $venv from $req" >&2
  local PY
  PY=$(py312)
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  [ -x "$venv/bin/uv" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check uv==0.13.8
  "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -r "$req"
  cp "$req" "$stamp"
}

install_tool sam
install_tool checkov

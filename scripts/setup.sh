#!/usr/bin/env bash
# Creates the project venv (.venv, Python 3.12 like the Lambda runtime) with pinned deps, and makes sure a
# PostgreSQL 15 server is installed. Idempotent: a second run with nothing changed takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

export UV_PYTHON_DOWNLOADS=never
stamp=.venv/.installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || ! cmp -s requirements/dev.txt "$stamp"; then
  PY=$(py312)
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  [ -x .venv/bin/uv ] || .venv/bin/pip install --quiet --disable-pip-version-check uv==0.13.8
  .venv/bin/uv pip install --quiet --python .venv/bin/python -r requirements/dev.txt
  .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
  cp requirements/dev.txt "$stamp"
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL server binaries (initdb, pg_ctl) are missing: install the 'postgresql' package" >&2
    exit 1
  fi
fi
# The Lambda code lives under src/ (CodeUri: src/); make it importable from the venv as it is in Lambda.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$(pwd)/src" > "$site/tandem-src.pth"

#!/usr/bin/env bash
# Lints the CloudFormation/SAM templates: sam validate --lint, cfn-lint for both regions, and checkov.
# Exits non-zero on any finding. Checkov findings that are accepted are skipped inline in the template
# (Metadata: checkov: skip: - id/comment) so each one carries its reason; nothing is skipped here.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-tools.sh
export SAM_CLI_TELEMETRY=0
# Nothing here calls AWS; a region is all the tools need. Keep real credentials out of the picture.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
regions=(us-east-1 us-west-2)

templates=(template.yaml)
if [ -d infra_global ]; then
  shopt -s nullglob
  templates+=(infra_global/*.yaml infra_global/*.yml)
  shopt -u nullglob
fi

status=0
run() {
  echo "+ $*" >&2
  if ! "$@"; then
    status=1
  fi
}

run .tools/sam/bin/sam validate --lint --template-file template.yaml --region us-east-1
run .tools/sam/bin/cfn-lint --regions "${regions[@]}" -- "${templates[@]}"
for t in "${templates[@]}"; do
  run .tools/checkov/bin/checkov -f "$t" --framework cloudformation --skip-download --quiet --compact
done

if [ "$status" -ne 0 ]; then
  echo "lint-templates: FAILED" >&2
else
  echo "lint-templates: OK (${templates[*]})" >&2
fi
exit "$status"

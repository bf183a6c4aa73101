#!/usr/bin/env bash
# The static security scan run by CI (make scan): hadolint on the Dockerfile, and checkov on the
# Dockerfile and on the chart rendered for every CI scenario. Findings that are decisions are
# suppressed where they occur, each with its reason (docs/install.md lists them); any other
# finding fails the scan.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scan_venv=${SCAN_VENV:-$root/.venv-scan}
helm=${LIFELONG_CACHE:-$HOME/.cache/lifelong}/bin/helm
hadolint=$root/.venv/bin/hadolint

for program in "$helm" "$hadolint" "$scan_venv/bin/checkov"; do
  if [ ! -x "$program" ]; then
    echo "tools/scan.sh: $program is missing; run make scan (it installs what the scan needs)" >&2
    exit 1
  fi
done

"$hadolint" "$root/Dockerfile"
# --skip-download: no calls home; checks run with their built-in definitions.
"$scan_venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile \
  --file "$root/Dockerfile"

# One folder per scenario: checkov's cross-object checks (a NetworkPolicy selecting the pod)
# must not be satisfied by an object of another scenario.
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for values in "$root"/charts/lifelong/ci/*-values.yaml; do
  scenario=$(basename "$values" -values.yaml)
  mkdir "$rendered/$scenario"
  "$helm" template lifelong "$root/charts/lifelong" --namespace lifelong-system \
    --values "$values" >"$rendered/$scenario/chart.yaml"
  echo "tools/scan.sh: the chart with ci/$scenario-values.yaml" >&2
  "$scan_venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
    --directory "$rendered/$scenario"
done
echo "tools/scan.sh: no unexplained finding in the Dockerfile or the chart" >&2

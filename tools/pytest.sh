#!/usr/bin/env bash
# Runs pytest from the project's environment. pytest exits 5 when it collected no test; for
# Lifelong that always means something is broken (a wrong path, a bad marker, an import error
# hidden by a plugin), so it is reported and turned into a failure rather than a silent pass.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON_BIN:-$here/.venv/bin/python}
"$python" -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "tools/pytest.sh: pytest collected no tests for: pytest $*; failing the run" >&2
  exit 1
fi
exit "$status"

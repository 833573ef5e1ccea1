#!/usr/bin/env bash
# Run Dockyard's test suite: make sure the tools are there, then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k conformance`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-tools.sh
export PATH="${DOCKYARD_TOOLS:-$HOME/.cache/dockyard-tools}/bin:$PATH"

rc=0
python -m pytest -p no:cacheprovider -ra tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
fi
exit "$rc"

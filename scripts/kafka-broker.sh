#!/usr/bin/env bash
# Runs one Apache Kafka node (KRaft: broker and controller in one process) in the foreground,
# tuned for tests, from the jars scripts/install-broker.sh installed.
#
#   scripts/kafka-broker.sh --port PORT --data DIR [options]
#   scripts/kafka-broker.sh --version
#
# Options:
#   --port PORT             client listener on 127.0.0.1:PORT (required)
#   --data DIR              data directory; formatted on first use, reused after (required)
#   --controller-port PORT  controller listener (default: a free port, remembered in DIR)
#   --node-id N             node id (default 1)
#   --voters SPEC           the controller quorum, `1@127.0.0.1:P1,2@127.0.0.1:P2,...`, for a
#                           cluster (default: this node alone); every node gets the same SPEC
#   --cluster-id ID         the cluster id every node of a cluster is formatted with
#                           (default: a new one, remembered in DIR)
#   --heap SIZE             maximum JVM heap (default 512m)
#   --property KEY=VALUE    any broker property, repeatable (wins over the defaults)
#   --watch-pid PID         stop when process PID exits (for test harnesses)
#   --ephemeral             delete DIR after the broker stops
#
# Defaults for tests: internal topics replicated to min(3, nodes) with min ISR min(2, nodes),
# group.initial.rebalance.delay.ms=0, no automatic topic creation. Broker log lines of level
# ERROR go to standard output, everything at INFO to DIR/server.log.
# SIGTERM (or SIGINT) stops the broker cleanly (controlled shutdown) and exits 0.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${RISKGATE_TOOLS:-$HOME/.cache/riskgate/tools}"
pom="$here/kafka/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
libs="$tools/kafka/$version/libs"

die() { echo "kafka-broker.sh: $*" >&2; exit 2; }

port="" data="" cport="" node=1 voters="" cluster="" heap=512m watch="" ephemeral=false
props=()
while [ $# -gt 0 ]; do
    case "$1" in
        --version) echo "$version"; exit 0 ;;
        --port) port="${2:?}"; shift 2 ;;
        --data) data="${2:?}"; shift 2 ;;
        --controller-port) cport="${2:?}"; shift 2 ;;
        --node-id) node="${2:?}"; shift 2 ;;
        --voters) voters="${2:?}"; shift 2 ;;
        --cluster-id) cluster="${2:?}"; shift 2 ;;
        --heap) heap="${2:?}"; shift 2 ;;
        --property) props+=("${2:?}"); shift 2 ;;
        --watch-pid) watch="${2:?}"; shift 2 ;;
        --ephemeral) ephemeral=true; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument \`$1\` (see --help)" ;;
    esac
done
[ -n "$port" ] || die "--port PORT is required"
[ -n "$data" ] || die "--data DIR is required"
[ -d "$libs" ] || die "Kafka $version is not installed in $libs: run scripts/install-broker.sh"
command -v java >/dev/null || die "java (17 or newer) is needed"

mkdir -p "$data"
data="$(cd "$data" && pwd)"
cp="$libs/*"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The controller port and the cluster id of this data directory, chosen once.
if [ -z "$voters" ]; then
    if [ -z "$cport" ]; then
        if [ -f "$data/controller.port" ]; then cport="$(cat "$data/controller.port")"; else cport="$(free_port)"; fi
    fi
    echo "$cport" > "$data/controller.port"
    voters="$node@127.0.0.1:$cport"
else
    if [ -z "$cport" ]; then
        cport="$(tr ',' '\n' <<<"$voters" | sed -n "s/^$node@[^:]*:\([0-9]*\)$/\1/p")"
        [ -n "$cport" ] || die "node $node is not among the voters \`$voters\`"
    fi
fi
nodes="$(tr ',' '\n' <<<"$voters" | grep -c .)"
rf=$(( nodes < 3 ? nodes : 3 ))
isr=$(( nodes < 2 ? nodes : 2 ))
if [ -z "$cluster" ]; then
    if [ -f "$data/cluster.id" ]; then
        cluster="$(cat "$data/cluster.id")"
    else
        # A Kafka Uuid: 16 random bytes, base64url without padding, not starting with `-`.
        cluster="-"
        while [ "${cluster#-}" != "$cluster" ]; do
            cluster="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        done
    fi
fi
echo "$cluster" > "$data/cluster.id"

config="$data/server.properties"
{
    echo "process.roles=broker,controller"
    echo "node.id=$node"
    echo "controller.quorum.voters=$voters"
    echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
    echo "controller.listener.names=CONTROLLER"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    echo "log.dirs=$data/logs"
    echo "num.partitions=1"
    echo "auto.create.topics.enable=false"
    echo "offsets.topic.replication.factor=$rf"
    echo "offsets.topic.num.partitions=10"
    echo "transaction.state.log.replication.factor=$rf"
    echo "transaction.state.log.min.isr=$isr"
    echo "transaction.state.log.num.partitions=10"
    echo "share.coordinator.state.topic.replication.factor=$rf"
    echo "share.coordinator.state.topic.min.isr=$isr"
    echo "group.initial.rebalance.delay.ms=0"
    echo "num.network.threads=2"
    echo "num.io.threads=4"
    echo "log.segment.bytes=67108864"
    for p in ${props[@]+"${props[@]}"}; do echo "$p"; done
} > "$config"

cat > "$data/log4j2.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <ThresholdFilter level="ERROR"/>
    </Console>
    <File name="file" fileName="$data/server.log">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/><AppenderRef ref="file"/></Root>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
  </Loggers>
</Configuration>
XML

if [ ! -f "$data/logs/meta.properties" ]; then
    java -XX:TieredStopAtLevel=1 -Xshare:auto -cp "$cp" -Dlog4j2.configurationFile="$data/log4j2.xml" \
        kafka.tools.StorageTool format --cluster-id "$cluster" --config "$config" >/dev/null
fi

java -Xms128m -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$data/log4j2.xml" \
    -cp "$cp" kafka.Kafka "$config" &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null || true; }
trap stop TERM INT
if [ -n "$watch" ]; then
    ( while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done; kill -TERM "$pid" 2>/dev/null ) &
fi
status=0
while :; do
    wait "$pid" && status=0 || status=$?
    kill -0 "$pid" 2>/dev/null || break
done
$ephemeral && rm -rf "$data"
# 143: the JVM's own exit after SIGTERM ran its shutdown hook (a clean, controlled shutdown).
if [ "$status" -eq 0 ] || [ "$status" -eq 143 ]; then exit 0; fi
exit "$status"

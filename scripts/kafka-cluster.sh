#!/usr/bin/env bash
# A three-node Apache Kafka cluster on loopback (each node broker and controller, one KRaft
# quorum), for trying failover by hand; tests/failover.rs starts its own the same way.
#
#   scripts/kafka-cluster.sh --data DIR [--ports P1,P2,P3]
#
# Runs scripts/kafka-broker.sh once per node (data in DIR/kafka-N, output in DIR/kafka-N.log)
# and waits in the foreground; SIGTERM or Ctrl-C stops all three cleanly. Controller ports are
# chosen once and kept in DIR. Clients bootstrap from 127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3.
# Defaults: ports 19092,19093,19094. Internal topics are replicated three times, min ISR 2.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="" ports="19092,19093,19094"
while [ $# -gt 0 ]; do
    case "$1" in
        --data) data="${2:?}"; shift 2 ;;
        --ports) ports="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "kafka-cluster.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$data" ] || { echo "kafka-cluster.sh: --data DIR is required" >&2; exit 2; }
mkdir -p "$data"
IFS=, read -r -a broker_ports <<<"$ports"
[ ${#broker_ports[@]} -eq 3 ] || { echo "kafka-cluster.sh: --ports takes three ports" >&2; exit 2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
if [ ! -f "$data/voters" ]; then
    echo "1@127.0.0.1:$(free_port),2@127.0.0.1:$(free_port),3@127.0.0.1:$(free_port)" > "$data/voters"
fi
if [ ! -f "$data/cluster.id" ]; then
    id="-"
    while [ "${id#-}" != "$id" ]; do id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"; done
    echo "$id" > "$data/cluster.id"
fi
voters="$(cat "$data/voters")"
cluster="$(cat "$data/cluster.id")"

pids=()
stop() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap stop TERM INT
for n in 1 2 3; do
    "$here/kafka-broker.sh" --port "${broker_ports[$((n - 1))]}" --data "$data/kafka-$n" \
        --node-id "$n" --voters "$voters" --cluster-id "$cluster" --heap 384m \
        > "$data/kafka-$n.log" 2>&1 &
    pids+=($!)
done
echo "kafka-cluster.sh: three nodes starting; bootstrap 127.0.0.1:${broker_ports[0]},127.0.0.1:${broker_ports[1]},127.0.0.1:${broker_ports[2]}"
status=0
for p in "${pids[@]}"; do
    while :; do
        wait "$p" && s=0 || s=$?
        kill -0 "$p" 2>/dev/null || break
    done
    [ "$s" -eq 0 ] || status=$s
done
exit "$status"

#!/usr/bin/env bash
# Runs one of Apache Kafka's command-line tools from the jars scripts/install-broker.sh
# installed (the Maven artifacts have no bin/ scripts), named as in Kafka's bin/ directory:
#
#   scripts/kafka-tool.sh kafka-topics.sh --bootstrap-server 127.0.0.1:9092 --list
#   scripts/kafka-tool.sh kafka-console-producer.sh --bootstrap-server ... --topic intents
#
# Known tools: kafka-topics.sh, kafka-console-producer.sh, kafka-console-consumer.sh,
# kafka-transactions.sh. The tests use it to run docker-compose.yml's commands on this machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${RISKGATE_TOOLS:-$HOME/.cache/riskgate/tools}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
libs="$tools/kafka/$version/libs"
[ -d "$libs" ] || { echo "kafka-tool.sh: Kafka $version is not installed in $libs: run scripts/install-broker.sh" >&2; exit 2; }
name="${1:?usage: kafka-tool.sh TOOL [ARGS...]}"
shift
case "$(basename "$name")" in
    kafka-topics.sh) class=org.apache.kafka.tools.TopicCommand ;;
    kafka-console-producer.sh) class=org.apache.kafka.tools.ConsoleProducer ;;
    kafka-console-consumer.sh) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-transactions.sh) class=org.apache.kafka.tools.TransactionsCommand ;;
    *) echo "kafka-tool.sh: unknown tool \`$name\`" >&2; exit 2 ;;
esac
exec java -Xmx256m -cp "$libs/*" -Dlog4j2.level=WARN "$class" "$@"

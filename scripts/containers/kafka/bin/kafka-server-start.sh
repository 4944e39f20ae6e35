#!/usr/bin/env bash
# kafka-server-start.sh server.properties: a broker/controller in the foreground.
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"

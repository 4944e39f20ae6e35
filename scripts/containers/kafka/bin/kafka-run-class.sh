#!/usr/bin/env bash
# kafka-run-class.sh CLASS ARGS...: the JVM invocation of Kafka's own script,
# on the jars in /opt/kafka/libs.
set -euo pipefail
class=$1
shift
heap=${KAFKA_HEAP_OPTS:--Xmx256M}
perf=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}
log4j=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/etc/kafka/docker/log4j2.properties}
# shellcheck disable=SC2086 # the *_OPTS are word lists, as in Kafka's scripts
exec java $heap $perf ${KAFKA_GC_LOG_OPTS:-} -Dkafka.logs.dir=/opt/kafka/logs $log4j ${KAFKA_JMX_OPTS:-} ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' "$class" "$@"

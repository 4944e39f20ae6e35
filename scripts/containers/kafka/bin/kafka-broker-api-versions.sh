#!/usr/bin/env bash
# A stand-in for the official image's kafka-broker-api-versions.sh as a
# health check (the tools jar is not in this image): succeeds when the
# --bootstrap-server address accepts a TCP connection.
set -euo pipefail
addr=localhost:9092
while [[ $# -gt 0 ]]; do
  case $1 in
    --bootstrap-server) addr=$2; shift 2 ;;
    *) shift ;;
  esac
done
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"

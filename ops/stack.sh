#!/usr/bin/env bash
# The whole local stack: Kafka, PostgreSQL, RabbitMQ, and the Prometheus exporters
# of PostgreSQL and Redis (ops/exporters/exporters.sh).
#   ops/stack.sh up|down|status
set -uo pipefail
OPS_DIR="$(cd "$(dirname "$0")" && pwd)"
SERVICES=(kafka postgres rabbitmq exporters)

case "${1:-status}" in
  up)
    for s in "${SERVICES[@]}"; do bash "$OPS_DIR/$s/$s.sh" up || exit 1; done
    ;;
  down)
    for s in "${SERVICES[@]}"; do bash "$OPS_DIR/$s/$s.sh" down; done
    ;;
  status)
    rc=0
    for s in "${SERVICES[@]}"; do bash "$OPS_DIR/$s/$s.sh" status || rc=3; done
    exit $rc
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

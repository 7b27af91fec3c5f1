#!/usr/bin/env bash
# Prometheus from Debian's packages, scraping the local workers (ops/prometheus/prometheus.yml).
#   ops/prometheus/prometheus.sh install|up|down|status
SERVICE=prometheus
source "$(dirname "$0")/../lib.sh"

PROM_DIR="$STATE_DIR/prometheus"
PID_FILE="$PROM_DIR/prometheus.pid"
LISTEN="${TE_PROMETHEUS_LISTEN:-127.0.0.1:9090}"

install() { command -v promtool >/dev/null && command -v prometheus >/dev/null || apt_install prometheus; }

running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

ready() { tcp_open "${LISTEN%:*}" "${LISTEN#*:}"; }

up() {
  install
  running && return 0
  if ready; then log "something already listens on $LISTEN; leaving it"; return 0; fi
  mkdir -p "$PROM_DIR"
  nohup setsid prometheus --config.file="$OPS_DIR/prometheus/prometheus.yml" \
    --storage.tsdb.path="$PROM_DIR/data" --web.listen-address="$LISTEN" \
    >"$PROM_DIR/prometheus.log" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  wait_for "prometheus on $LISTEN" 60 ready
}

down() {
  running && kill "$(cat "$PID_FILE")" || true
  rm -f "$PID_FILE"
}

status() {
  if running && ready; then echo "prometheus: up (http://$LISTEN)"; else echo "prometheus: down"; return 3; fi
}

case "${1:-status}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac

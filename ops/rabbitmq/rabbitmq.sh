#!/usr/bin/env bash
# RabbitMQ from Debian's packages, with the engine's user, the management plugin and
# the Prometheus plugin (rabbitmq_prometheus: :15692/metrics, per-queue metrics on
# /metrics/detailed, scraped by ops/prometheus/prometheus.yml).
#   ops/rabbitmq/rabbitmq.sh up|down|status
SERVICE=rabbitmq
source "$(dirname "$0")/../lib.sh"

MQ_HOST="${TE_RABBITMQ__HOST:-127.0.0.1}"
MQ_PORT="${TE_RABBITMQ__PORT:-5672}"
MQ_USER="${TE_RABBITMQ__USER:-trade_engine}"
MQ_PASSWORD="${TE_RABBITMQ__PASSWORD:-trade_engine}"
MQ_VHOST="${TE_RABBITMQ__VHOST:-/}"
PLUGINS=(rabbitmq_management rabbitmq_prometheus)
PROMETHEUS_PORT=15692

ctl() { as_root rabbitmqctl -q "$@"; }

running() { as_root rabbitmqctl -q status >/dev/null 2>&1; }

ready() { tcp_open "$MQ_HOST" "$MQ_PORT"; }

node_started() { as_root rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; }

# A node started before the Prometheus plugin was added to PLUGINS gets it online.
ensure_plugins() {
  local enabled
  enabled="$(as_root rabbitmq-plugins -q list -e -m 2>/dev/null || true)"
  for plugin in "${PLUGINS[@]}"; do
    if ! grep -qx "$plugin" <<<"$enabled"; then
      log "enabling plugin $plugin"
      as_root rabbitmq-plugins -q enable "$plugin" >/dev/null
    fi
  done
}

ensure_user() {
  if ! ctl list_users | awk '{print $1}' | grep -qx "$MQ_USER"; then
    log "creating user $MQ_USER"
    ctl add_user "$MQ_USER" "$MQ_PASSWORD" >/dev/null
  else
    ctl change_password "$MQ_USER" "$MQ_PASSWORD" >/dev/null
  fi
  ctl list_vhosts | grep -qx "$MQ_VHOST" || ctl add_vhost "$MQ_VHOST"
  ctl set_user_tags "$MQ_USER" administrator >/dev/null
  ctl set_permissions -p "$MQ_VHOST" "$MQ_USER" ".*" ".*" ".*" >/dev/null
}

up() {
  if ready && ! command -v rabbitmqctl >/dev/null; then
    log "an external broker answers on $MQ_HOST:$MQ_PORT; using it"
    return 0
  fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  if ! running; then
    as_root rabbitmq-plugins -q enable --offline "${PLUGINS[@]}" >/dev/null
    log "starting rabbitmq"
    # The Debian wrapper drops to the rabbitmq user; -detached daemonises.
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_for "rabbitmq node" 120 node_started
  fi
  wait_for "rabbitmq on $MQ_HOST:$MQ_PORT" 60 ready
  ensure_plugins
  ensure_user
}

down() {
  running && ctl stop >/dev/null 2>&1 || true
}

status() {
  if running && ready; then
    echo "rabbitmq: up ($MQ_HOST:$MQ_PORT, management on :15672, metrics on :$PROMETHEUS_PORT)"
  elif ready; then
    echo "rabbitmq: up (external, $MQ_HOST:$MQ_PORT)"
  else
    echo "rabbitmq: down"; return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

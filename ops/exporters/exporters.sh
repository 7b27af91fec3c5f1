#!/usr/bin/env bash
# Prometheus exporters of the local servers, from Debian's packages, run as the
# current user on loopback ports and scraped by ops/prometheus/prometheus.yml:
#   prometheus-postgres-exporter  127.0.0.1:9187  (TE_POSTGRES_EXPORTER_PORT)  pg_up, pg_stat_*, ...
#   prometheus-redis-exporter     127.0.0.1:9121  (TE_REDIS_EXPORTER_PORT)     redis_up, ...
# The PostgreSQL DSN is the engine's own (TE_POSTGRES__*, the defaults of
# ops/postgres/postgres.sh, whose role has pg_monitor); it reaches the exporter in
# its environment, never on a command line. Redis: TE_REDIS_PORT (ops/redis/redis.sh);
# while no Redis runs, its exporter answers redis_up 0.
#   ops/exporters/exporters.sh install|up|down|status
SERVICE=exporters
source "$(dirname "$0")/../lib.sh"

EXPORTERS_DIR="$STATE_DIR/exporters"
LISTEN_HOST=127.0.0.1
PG_EXPORTER_PORT="${TE_POSTGRES_EXPORTER_PORT:-9187}"
REDIS_EXPORTER_PORT="${TE_REDIS_EXPORTER_PORT:-9121}"

PG_HOST="${TE_POSTGRES__HOST:-127.0.0.1}"
PG_PORT="${TE_POSTGRES__PORT:-5432}"
PG_USER="${TE_POSTGRES__USER:-trade_engine}"
PG_PASSWORD="${TE_POSTGRES__PASSWORD:-trade_engine}"
PG_DB="${TE_POSTGRES__DATABASE:-trade_engine}"
REDIS_ADDR="redis://127.0.0.1:${TE_REDIS_PORT:-6379}"

install() {
  command -v prometheus-postgres-exporter >/dev/null && command -v prometheus-redis-exporter >/dev/null \
    || apt_install prometheus-postgres-exporter prometheus-redis-exporter
}

# url-encode for the DSN (user and password may hold any character)
urlencode() {
  local LC_ALL=C s="$1" out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c="${s:i:1}"
    case "$c" in
      [a-zA-Z0-9.~_-]) out+="$c" ;;
      *) out+="$(printf '%%%02X' "'$c")" ;;
    esac
  done
  printf '%s' "$out"
}

pid_file() { echo "$EXPORTERS_DIR/$1.pid"; }

running() { local f; f="$(pid_file "$1")"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

answers() { tcp_open "$LISTEN_HOST" "$1"; }

# start NAME PORT COMMAND...: once; something else already on the port is left alone.
start() {
  local name="$1" port="$2"; shift 2
  running "$name" && return 0
  if answers "$port"; then
    log "something already listens on $LISTEN_HOST:$port; leaving it (not starting $name)"
    return 0
  fi
  nohup setsid "$@" >"$EXPORTERS_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "$name")"
  wait_for "$name on $LISTEN_HOST:$port" 30 answers "$port"
}

up() {
  install
  mkdir -p "$EXPORTERS_DIR"
  DATA_SOURCE_NAME="postgresql://$(urlencode "$PG_USER"):$(urlencode "$PG_PASSWORD")@$PG_HOST:$PG_PORT/$(urlencode "$PG_DB")?sslmode=disable" \
    start postgres-exporter "$PG_EXPORTER_PORT" \
    prometheus-postgres-exporter --web.listen-address="$LISTEN_HOST:$PG_EXPORTER_PORT" \
    --log.level=warn
  start redis-exporter "$REDIS_EXPORTER_PORT" \
    prometheus-redis-exporter -web.listen-address "$LISTEN_HOST:$REDIS_EXPORTER_PORT" \
    -redis.addr "$REDIS_ADDR"
}

down() {
  for name in postgres-exporter redis-exporter; do
    running "$name" && kill "$(cat "$(pid_file "$name")")" || true
    rm -f "$(pid_file "$name")"
  done
}

status() {
  local rc=0
  for spec in "postgres-exporter:$PG_EXPORTER_PORT" "redis-exporter:$REDIS_EXPORTER_PORT"; do
    local name="${spec%%:*}" port="${spec#*:}"
    if running "$name" && answers "$port"; then
      echo "$name: up (http://$LISTEN_HOST:$port/metrics)"
    elif answers "$port"; then
      echo "$name: up (external, $LISTEN_HOST:$port)"
    else
      echo "$name: down"; rc=3
    fi
  done
  return $rc
}

case "${1:-status}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac

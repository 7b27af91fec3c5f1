#!/usr/bin/env bash
# Redis from Debian's packages, run as the current user with project-local state.
# The gateway needs it only when more than one gateway process runs (shared rate
# limits and idempotency records); a single process keeps that state in memory.
#   ops/redis/redis.sh up|down|status
# Port: TE_REDIS_PORT (default 6379); state: $TE_STATE_DIR/redis[-PORT] (.state/redis).
SERVICE=redis
source "$(dirname "$0")/../lib.sh"

REDIS_HOST=127.0.0.1
REDIS_PORT="${TE_REDIS_PORT:-6379}"
if [ "$REDIS_PORT" = 6379 ]; then
  REDIS_DIR="$STATE_DIR/redis"
else
  REDIS_DIR="$STATE_DIR/redis-$REDIS_PORT"
fi
PIDFILE="$REDIS_DIR/redis.pid"

ready() {
  [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
}

ours() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

up() {
  if ! command -v redis-server >/dev/null; then
    if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
      log "an external server answers on $REDIS_HOST:$REDIS_PORT; using it"
      return 0
    fi
    apt_install redis-server
  fi
  if ready; then
    log "redis already answers on $REDIS_HOST:$REDIS_PORT"
    return 0
  fi
  mkdir -p "$REDIS_DIR"
  log "starting redis on $REDIS_HOST:$REDIS_PORT (state in $REDIS_DIR)"
  # Append-only file, fsync once a second: idempotency records survive a restart;
  # losing the last second of rate-limit state is harmless.
  redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --dir "$REDIS_DIR" \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$REDIS_DIR/redis.log" \
    --save "" --appendonly yes --appendfsync everysec --protected-mode yes
  wait_for "redis on $REDIS_HOST:$REDIS_PORT" 30 ready
}

down() {
  if ours; then
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$PIDFILE")"
    local deadline=$((SECONDS + 20))
    while ours && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  fi
}

status() {
  if ready && ours; then
    echo "redis: up ($REDIS_HOST:$REDIS_PORT, state in $REDIS_DIR)"
  elif ready; then
    echo "redis: up (external, $REDIS_HOST:$REDIS_PORT)"
  else
    echo "redis: down"; return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

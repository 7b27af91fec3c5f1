#!/usr/bin/env bash
# Toxiproxy (Shopify), the fault injector of the chaos tests, built from the Go module proxy.
#   ops/toxiproxy/toxiproxy.sh up|down|status|build
# The server and the CLI are built once into $STATE_DIR/toxiproxy/bin (a pinned version);
# the server listens for its HTTP API on loopback only. Proxies and toxics are created by
# the tests through ops/chaos/toxiproxy.py, never here: a restart starts with none.
SERVICE=toxiproxy
source "$(dirname "$0")/../lib.sh"

TOXIPROXY_VERSION="${TE_TOXIPROXY_VERSION:-v2.12.0}"
TP_DIR="$STATE_DIR/toxiproxy"
BIN_DIR="$TP_DIR/bin"
LOG_FILE="$TP_DIR/toxiproxy.log"
PID_FILE="$TP_DIR/toxiproxy.pid"
HOST="${TE_TOXIPROXY_HOST:-127.0.0.1}"
# Not Toxiproxy's default 8474: a developer's own Toxiproxy may hold that one.
PORT="${TE_TOXIPROXY_PORT:-18474}"

build() {
  local stamp="$BIN_DIR/.version"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$TOXIPROXY_VERSION" ] \
    && [ -x "$BIN_DIR/toxiproxy-server" ] && [ -x "$BIN_DIR/toxiproxy-cli" ]; then
    return 0
  fi
  # Toxiproxy v2.12 needs Go >= 1.23: Debian 12's golang-go (1.19) cannot build it.
  local go; go="$(command -v go || echo /usr/local/go/bin/go)"
  [ -x "$go" ] || die "Go >= 1.23 is needed to build toxiproxy (set PATH to its bin folder)"
  local gobin="$TP_DIR/gobin"
  rm -rf "$gobin"; mkdir -p "$gobin" "$BIN_DIR"
  log "building toxiproxy $TOXIPROXY_VERSION (server and cli) with $("$go" version | cut -d' ' -f3)"
  # nice: the build must not starve benchmarks sharing the two cores.
  GOBIN="$gobin" CGO_ENABLED=0 nice -n 10 "$go" install \
    "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" \
    "github.com/Shopify/toxiproxy/v2/cmd/cli@$TOXIPROXY_VERSION" >"$TP_DIR/build.log" 2>&1 \
    || { tail -20 "$TP_DIR/build.log" >&2; die "go install of toxiproxy failed (see $TP_DIR/build.log)"; }
  mv "$gobin/server" "$BIN_DIR/toxiproxy-server"
  mv "$gobin/cli" "$BIN_DIR/toxiproxy-cli"
  rm -rf "$gobin"
  echo "$TOXIPROXY_VERSION" >"$stamp"
}

running() {
  [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

ready() {
  tcp_open "$HOST" "$PORT"
}

up() {
  mkdir -p "$TP_DIR"
  if running; then
    wait_for "toxiproxy on $HOST:$PORT" 30 ready
    return 0
  fi
  if tcp_open "$HOST" "$PORT"; then
    log "something already listens on $HOST:$PORT; using it as toxiproxy"
    return 0
  fi
  build
  log "starting toxiproxy $TOXIPROXY_VERSION on $HOST:$PORT"
  nohup setsid "$BIN_DIR/toxiproxy-server" -host "$HOST" -port "$PORT" \
    >"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  wait_for "toxiproxy on $HOST:$PORT" 30 ready
}

down() {
  if running; then
    local pid; pid="$(cat "$PID_FILE")"
    log "stopping toxiproxy (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
}

status() {
  if running && ready; then
    echo "toxiproxy: up (pid $(cat "$PID_FILE"), api http://$HOST:$PORT, version $TOXIPROXY_VERSION)"
  elif tcp_open "$HOST" "$PORT"; then
    echo "toxiproxy: up (external, api http://$HOST:$PORT)"
  else
    echo "toxiproxy: down"; return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  build) build ;;
  *) echo "usage: $0 up|down|status|build" >&2; exit 2 ;;
esac

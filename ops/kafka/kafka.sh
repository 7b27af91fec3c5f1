#!/usr/bin/env bash
# Apache Kafka 3.9 in KRaft mode, single node, from the jars Maven Central publishes.
#   ops/kafka/kafka.sh up|down|status|reset
# Jars are resolved once by Maven into $STATE_DIR/kafka/libs and reused after.
SERVICE=kafka
source "$(dirname "$0")/../lib.sh"

KAFKA_DIR="$STATE_DIR/kafka"
LIBS_DIR="$KAFKA_DIR/libs"
DATA_DIR="$KAFKA_DIR/data"
LOG_DIR="$KAFKA_DIR/logs"
PID_FILE="$KAFKA_DIR/kafka.pid"
# The pid of a broker once seen started: its "started" log line rolls away.
STARTED_FILE="$KAFKA_DIR/started.pid"
CONFIG="$KAFKA_DIR/server.properties"
HOST="${TE_KAFKA_HOST:-127.0.0.1}"
PORT="${TE_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${TE_KAFKA_CONTROLLER_PORT:-9093}"
HEAP="${TE_KAFKA_HEAP:-1g}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$OPS_DIR/kafka/pom.xml")"

fetch_jars() {
  local stamp="$LIBS_DIR/.version"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$KAFKA_VERSION" ]; then
    return 0
  fi
  command -v mvn >/dev/null || apt_install maven
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  log "resolving kafka_2.13 $KAFKA_VERSION and its runtime dependencies with Maven"
  rm -rf "$LIBS_DIR"
  mvn -q -B -f "$OPS_DIR/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS_DIR" >"$KAFKA_DIR/maven.log" 2>&1 \
    || { tail -20 "$KAFKA_DIR/maven.log" >&2; die "Maven could not resolve the Kafka jars (see $KAFKA_DIR/maven.log)"; }
  echo "$KAFKA_VERSION" >"$stamp"
}

render_config() {
  sed -e "s|@HOST@|$HOST|g" -e "s|@PORT@|$PORT|g" \
      -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
      "$OPS_DIR/kafka/server.properties.in" >"$CONFIG"
}

JAVA_ARGS=("-Xmx$HEAP" -Xms256m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dkafka.logs.dir=$LOG_DIR" "-Dlog4j.configuration=file:$OPS_DIR/kafka/log4j.properties"
  -cp "$LIBS_DIR/*")

java_cmd() {
  java "${JAVA_ARGS[@]}" "$@"
}

format_storage() {
  [ -f "$DATA_DIR/meta.properties" ] && return 0
  mkdir -p "$DATA_DIR"
  local cluster_id
  cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid | tail -1)"
  log "formatting KRaft storage (cluster id $cluster_id)"
  java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" >/dev/null
}

running() {
  [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

ready() {
  tcp_open "$HOST" "$PORT" || return 1
  # server.log rolls by size (log4j.properties), so on a long-lived broker the
  # "started" line is gone from it; the first sighting is remembered by pid.
  if [ -f "$STARTED_FILE" ] && [ -f "$PID_FILE" ] \
    && [ "$(cat "$STARTED_FILE")" = "$(cat "$PID_FILE")" ]; then
    return 0
  fi
  if grep -q "Kafka Server started" "$LOG_DIR"/server.log* 2>/dev/null; then
    if [ -f "$PID_FILE" ]; then cp "$PID_FILE" "$STARTED_FILE"; fi
    return 0
  fi
  return 1
}

up() {
  mkdir -p "$KAFKA_DIR" "$LOG_DIR"
  if running; then
    wait_for "kafka on $HOST:$PORT" 120 ready
    return 0
  fi
  if tcp_open "$HOST" "$PORT"; then
    log "something already listens on $HOST:$PORT; using it as the broker"
    return 0
  fi
  fetch_jars
  render_config
  format_storage
  # Only this start's log may say "started" (rolled files of an earlier run would).
  rm -f "$LOG_DIR"/server.log* "$STARTED_FILE"
  log "starting kafka $KAFKA_VERSION on $HOST:$PORT"
  # setsid: the broker outlives the shell (and the test session) that started it.
  nohup setsid java "${JAVA_ARGS[@]}" kafka.Kafka "$CONFIG" >"$LOG_DIR/stdout.log" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  wait_for "kafka on $HOST:$PORT" 120 ready
}

down() {
  if running; then
    local pid; pid="$(cat "$PID_FILE")"
    log "stopping kafka (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE" "$STARTED_FILE"
}

status() {
  if running && ready; then
    echo "kafka: up (pid $(cat "$PID_FILE"), $HOST:$PORT, version $KAFKA_VERSION)"
  elif tcp_open "$HOST" "$PORT"; then
    echo "kafka: up (external, $HOST:$PORT)"
  else
    echo "kafka: down"; return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  reset) down; rm -rf "$DATA_DIR" "$LOG_DIR"; log "data removed" ;;
  *) echo "usage: $0 up|down|status|reset" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A local three-node Apache Kafka cluster in KRaft mode, for the chaos tests.
#   ops/kafka/cluster.sh up|down|status|reset          the whole cluster
#   ops/kafka/cluster.sh kill N|stop N|start N         one node: SIGKILL, clean stop, start
#   ops/kafka/cluster.sh bootstrap [--proxied]|env     where clients connect
#   ops/kafka/cluster.sh fill N|unfill N|disk          node N's disk full / space back; usage
# Same jars as the single broker (ops/kafka/kafka.sh, in $STATE_DIR/kafka/libs); its own
# ports, so both run side by side. Node N (1..3) is broker and controller:
#   clients and replication  127.0.0.1:1909(N+1)   (19092, 19093, 19094)
#   controller quorum        127.0.0.1:1919(N+1)
#   proxied listener         binds 1939(N+1), advertises 2909(N+1), where Toxiproxy
#                            (ops/toxiproxy/toxiproxy.sh, ops/chaos/) forwards to 1939(N+1)
# State: $STATE_DIR/kafka-cluster/N/{disk/data,logs,server.properties,kafka.pid}.
# Each node's log dir (disk/) is a tmpfs of its own, TE_KAFKA_CLUSTER_DISK_MB (1024) in
# size, when the caller may mount one (root): the disk-full chaos scenario fills one
# node's disk without touching the machine's (`fill N` writes disk/ballast until the
# tmpfs is full, `unfill N` removes it). A tmpfs keeps what a killed broker wrote, like
# a disk, but not across a reboot of the machine (then the cluster starts empty).
# TE_KAFKA_CLUSTER_DISK_MB=0, or no permission to mount: a plain folder, no `fill`.
SERVICE=kafka-cluster
source "$(dirname "$0")/../lib.sh"

NODES=(1 2 3)
CLUSTER_DIR="$STATE_DIR/kafka-cluster"
LIBS_DIR="$STATE_DIR/kafka/libs"
CLUSTER_ID_FILE="$CLUSTER_DIR/cluster.id"
HOST="${TE_KAFKA_CLUSTER_HOST:-127.0.0.1}"
BASE_PORT="${TE_KAFKA_CLUSTER_PORT:-19092}"
HEAP="${TE_KAFKA_CLUSTER_HEAP:-512m}"
DISK_MB="${TE_KAFKA_CLUSTER_DISK_MB:-1024}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$OPS_DIR/kafka/pom.xml")"

port() { echo $((BASE_PORT + $1 - 1)); }
controller_port() { echo $((BASE_PORT + 100 + $1 - 1)); }
proxied_port() { echo $((BASE_PORT + 300 + $1 - 1)); }
proxy_port() { echo $((BASE_PORT + 10000 + $1 - 1)); }
node_dir() { echo "$CLUSTER_DIR/$1"; }
pid_file() { echo "$CLUSTER_DIR/$1/kafka.pid"; }
disk_dir() { echo "$CLUSTER_DIR/$1/disk"; }
data_dir() { echo "$CLUSTER_DIR/$1/disk/data"; }
on_tmpfs() { mountpoint -q "$(disk_dir "$1")"; }

check_node() {
  case "${1:-}" in 1|2|3) ;; *) echo "usage: $0 kill|stop|start|fill|unfill N (N in 1 2 3)" >&2; exit 2 ;; esac
}

# The single broker's jars: resolved by its script once, shared by every node here.
fetch_jars() {
  local stamp="$LIBS_DIR/.version"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$KAFKA_VERSION" ]; then
    return 0
  fi
  command -v mvn >/dev/null || apt_install maven
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  log "resolving kafka_2.13 $KAFKA_VERSION and its runtime dependencies with Maven"
  mkdir -p "$STATE_DIR/kafka"
  rm -rf "$LIBS_DIR"
  mvn -q -B -f "$OPS_DIR/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS_DIR" >"$CLUSTER_DIR/maven.log" 2>&1 \
    || { tail -20 "$CLUSTER_DIR/maven.log" >&2; die "Maven could not resolve the Kafka jars (see $CLUSTER_DIR/maven.log)"; }
  echo "$KAFKA_VERSION" >"$stamp"
}

voters() {
  local out="" n
  for n in "${NODES[@]}"; do out+="${out:+,}$n@$HOST:$(controller_port "$n")"; done
  echo "$out"
}

render_config() {
  local n="$1" dir; dir="$(node_dir "$1")"
  mkdir -p "$dir/logs"
  sed -e "s|@NODE_ID@|$n|g" -e "s|@VOTERS@|$(voters)|g" -e "s|@HOST@|$HOST|g" \
      -e "s|@PORT@|$(port "$n")|g" -e "s|@CONTROLLER_PORT@|$(controller_port "$n")|g" \
      -e "s|@PROXIED_PORT@|$(proxied_port "$n")|g" -e "s|@PROXY_PORT@|$(proxy_port "$n")|g" \
      -e "s|@DATA_DIR@|$(data_dir "$n")|g" \
      "$OPS_DIR/kafka/cluster.properties.in" >"$dir/server.properties"
}

# java_args N: JAVA_ARGS = node N's heap, log folder and the Kafka classpath.
java_args() {
  local dir; dir="$(node_dir "$1")"
  JAVA_ARGS=("-Xmx$HEAP" -Xms128m -XX:+UseG1GC -Djava.awt.headless=true
    "-Dkafka.logs.dir=$dir/logs" "-Dlog4j.configuration=file:$OPS_DIR/kafka/log4j.properties"
    -cp "$LIBS_DIR/*")
}

node_java() {
  java_args "$1"; shift
  java "${JAVA_ARGS[@]}" "$@"
}

# All three nodes are formatted with one cluster id: a node formatted alone would
# refuse to join the others.
format_storage() {
  local n="$1" dir; dir="$(node_dir "$1")"
  [ -f "$(data_dir "$n")/meta.properties" ] && return 0
  if [ ! -f "$CLUSTER_ID_FILE" ]; then
    node_java "$n" kafka.tools.StorageTool random-uuid | tail -1 >"$CLUSTER_ID_FILE"
  fi
  mkdir -p "$(data_dir "$n")"
  log "formatting node $n (cluster id $(cat "$CLUSTER_ID_FILE"))"
  node_java "$n" kafka.tools.StorageTool format -t "$(cat "$CLUSTER_ID_FILE")" \
    -c "$dir/server.properties" >/dev/null
}

# Node N's log dir on a tmpfs of its own (see the header), mounted once; a folder that
# already holds data is never hidden under a mount.
mount_disk() {
  local n="$1" disk; disk="$(disk_dir "$1")"
  mkdir -p "$disk"
  on_tmpfs "$n" && return 0
  [ "$DISK_MB" = 0 ] && return 0
  if [ -n "$(ls -A "$disk")" ]; then
    log "node $n: $disk already holds data on the machine's disk; no tmpfs (no \`fill\`)"
    return 0
  fi
  if mount -t tmpfs -o "size=${DISK_MB}m,mode=0755" "kafka-node-$n" "$disk" 2>/dev/null; then
    log "node $n: log dir on a ${DISK_MB} MiB tmpfs ($disk)"
  else
    log "node $n: cannot mount a tmpfs (not root?): log dir on the machine's disk (no \`fill\`)"
  fi
}

unmount_disk() {
  on_tmpfs "$1" && umount "$(disk_dir "$1")"
  return 0
}

# Fill node N's tmpfs to the last byte: the broker's next write fails with ENOSPC, and a
# broker whose only log dir failed halts (what a full disk does to Kafka).
fill() {
  local n="$1" disk free_kb; disk="$(disk_dir "$1")"
  on_tmpfs "$n" || die "node $n's log dir is not on a tmpfs of its own: fill would fill the machine's disk"
  free_kb="$(df --output=avail -k "$disk" | tail -1 | tr -d ' ')"
  log "node $n: filling its disk ($((free_kb / 1024)) MiB free) with $disk/ballast"
  [ "$free_kb" -gt 0 ] && { fallocate -l "${free_kb}KiB" "$disk/ballast" 2>/dev/null || true; }
  # Whatever the allocation's rounding left: zeros until ENOSPC.
  dd if=/dev/zero of="$disk/ballast" bs=4k oflag=append conv=notrunc status=none 2>/dev/null || true
  df -h "$disk" | tail -1 >&2
}

unfill() {
  rm -f "$(disk_dir "$1")/ballast"
  log "node $1: ballast removed, $(df --output=avail -m "$(disk_dir "$1")" | tail -1 | tr -d ' ') MiB free"
}

disk() {
  local n kind
  for n in "${NODES[@]}"; do
    [ -d "$(disk_dir "$n")" ] || { echo "kafka node $n: no disk yet"; continue; }
    kind=folder; on_tmpfs "$n" && kind=tmpfs
    echo "kafka node $n: $kind $(df --output=used,size,avail -m "$(disk_dir "$n")" | tail -1 \
      | awk '{print $1 " of " $2 " MiB used, " $3 " MiB free"}')"
  done
}

running() {
  local f; f="$(pid_file "$1")"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

ready() {
  local n="$1" dir; dir="$(node_dir "$1")"
  running "$n" && tcp_open "$HOST" "$(port "$n")" || return 1
  # server.log rolls by size; the first "started" seen is remembered by pid.
  if [ -f "$dir/started.pid" ] && [ "$(cat "$dir/started.pid")" = "$(cat "$(pid_file "$n")")" ]; then
    return 0
  fi
  if grep -q "Kafka Server started" "$dir/logs"/server.log* 2>/dev/null; then
    cp "$(pid_file "$n")" "$dir/started.pid"
    return 0
  fi
  return 1
}

all_ready() {
  local n
  for n in "${NODES[@]}"; do ready "$n" || return 1; done
}

# Launch node N without waiting: a node alone cannot start, it needs a quorum of voters.
launch() {
  local n="$1" dir; dir="$(node_dir "$1")"
  running "$n" && return 0
  if tcp_open "$HOST" "$(port "$n")"; then
    die "something else listens on $HOST:$(port "$n"); node $n cannot start"
  fi
  mount_disk "$n"
  render_config "$n"
  format_storage "$n"
  rm -f "$dir/logs"/server.log* "$dir/started.pid"
  log "starting node $n on $HOST:$(port "$n") (controller $(controller_port "$n"))"
  # setsid: the node outlives the shell (and the test session) that started it.
  java_args "$n"
  nohup setsid java "${JAVA_ARGS[@]}" kafka.Kafka "$dir/server.properties" \
    >"$dir/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "$n")"
}

up() {
  mkdir -p "$CLUSTER_DIR"
  fetch_jars
  local n
  for n in "${NODES[@]}"; do launch "$n"; done
  wait_for "kafka cluster on $(bootstrap)" 180 all_ready
}

# Signal N's process; wait up to TIMEOUT_S for it to end, then SIGKILL it.
stop_node() {
  local n="$1" signal="$2" timeout_s="$3" f pid; f="$(pid_file "$1")"
  if running "$n"; then
    pid="$(cat "$f")"
    log "node $n (pid $pid): SIG$signal"
    kill -s "$signal" "$pid"
    local deadline=$((SECONDS + timeout_s))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$f" "$(node_dir "$n")/started.pid"
}

down() {
  # All at once: stopped one by one, the last two would wait for a quorum that is gone.
  local n
  for n in "${NODES[@]}"; do stop_node "$n" TERM 30 & done
  wait
}

status() {
  local n rc=0
  for n in "${NODES[@]}"; do
    if ready "$n"; then
      echo "kafka node $n: up (pid $(cat "$(pid_file "$n")"), $HOST:$(port "$n"), proxied $HOST:$(proxy_port "$n"))"
    elif running "$n"; then
      echo "kafka node $n: starting (pid $(cat "$(pid_file "$n")"))"; rc=3
    else
      echo "kafka node $n: down"; rc=3
    fi
  done
  return $rc
}

bootstrap() {
  local out="" n fn=port
  [ "${1:-}" = "--proxied" ] && fn=proxy_port
  for n in "${NODES[@]}"; do out+="${out:+,}$HOST:$($fn "$n")"; done
  echo "$out"
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  reset) down; for n in "${NODES[@]}"; do unmount_disk "$n"; done
         rm -rf "$CLUSTER_DIR"; log "data removed" ;;
  kill) check_node "${2:-}"; stop_node "$2" KILL 0 ;;
  stop) check_node "${2:-}"; stop_node "$2" TERM 60 ;;
  start) check_node "${2:-}"; mkdir -p "$CLUSTER_DIR"; fetch_jars; launch "$2"
         wait_for "kafka node $2" 120 ready "$2" ;;
  fill) check_node "${2:-}"; fill "$2" ;;
  unfill) check_node "${2:-}"; unfill "$2" ;;
  disk) disk ;;
  bootstrap) bootstrap "${2:-}" ;;
  env) echo "export TE_KAFKA__BOOTSTRAP_SERVERS=$(bootstrap)"
       echo "export TE_TOPICS__REPLICATION_FACTOR=3" ;;
  *) echo "usage: $0 up|down|status|reset|kill N|stop N|start N|fill N|unfill N|disk|bootstrap [--proxied]|env" >&2
     exit 2 ;;
esac

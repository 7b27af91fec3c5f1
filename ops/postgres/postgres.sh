#!/usr/bin/env bash
# PostgreSQL from Debian's packages: the distribution's cluster, plus the
# engine's role and database, and query monitoring: pg_stat_statements (preloaded,
# the extension created in the engine's database) and the slow-query log
# (log_min_duration_statement = 100ms, in the cluster's log under /var/log/postgresql/).
#   ops/postgres/postgres.sh up|down|status
SERVICE=postgres
source "$(dirname "$0")/../lib.sh"

PG_HOST="${TE_POSTGRES__HOST:-127.0.0.1}"
PG_PORT="${TE_POSTGRES__PORT:-5432}"
PG_USER="${TE_POSTGRES__USER:-trade_engine}"
PG_PASSWORD="${TE_POSTGRES__PASSWORD:-trade_engine}"
PG_DB="${TE_POSTGRES__DATABASE:-trade_engine}"

cluster() {
  # "<version> <name>" of the first cluster Debian knows of.
  pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1, $2}'
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

psql_admin() {
  as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"
}

ready() {
  pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

ensure_role_and_db() {
  # Idempotent: create once, and keep the password in step with the settings.
  local pw_sql=${PG_PASSWORD//\'/\'\'}
  psql_admin -d postgres <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE "$PG_USER" LOGIN PASSWORD '$pw_sql' CREATEDB;
  ELSE
    ALTER ROLE "$PG_USER" LOGIN PASSWORD '$pw_sql';
  END IF;
END
\$\$;
SQL
  if ! psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
    log "creating database $PG_DB"
    psql_admin -d postgres -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
  fi
}

# Query monitoring (and TLS off on loopback), in a file of the cluster's conf.d (Debian's postgresql.conf
# includes that directory): pg_stat_statements preloaded, and every statement
# slower than 100 ms logged with its duration.
SLOW_QUERY_MS=100
MONITORING_CONF=trade-engine-monitoring.conf

monitoring_conf() {
  local libs="$1"
  cat <<CONF
# Written by ops/postgres/postgres.sh (trade engine): query monitoring. Do not edit.
shared_preload_libraries = '$libs'
pg_stat_statements.max = 10000
pg_stat_statements.track = all
log_min_duration_statement = ${SLOW_QUERY_MS}ms
# This cluster serves loopback only: TLS there costs CPU at both ends (clients'
# default sslmode "prefer" takes it whenever offered) and protects nothing.
# A production server keeps TLS and clients set postgres.ssl_mode=verify-full.
ssl = off
CONF
}

# Idempotent: the file is written only when its content changes; the cluster is
# restarted only when a setting that needs it (shared_preload_libraries,
# pg_stat_statements.max) is pending a restart, otherwise reloaded, or left alone.
configure_monitoring() {
  local conf_dir libs wanted current=""
  conf_dir="$(dirname "$(psql_admin -d postgres -tAc 'SHOW config_file')")/conf.d"
  # Keep any library already preloaded, add pg_stat_statements once.
  libs="$(psql_admin -d postgres -tAc 'SHOW shared_preload_libraries' | tr -d ' ')"
  tr ',' '\n' <<<"$libs" | grep -qx pg_stat_statements || libs="${libs:+$libs,}pg_stat_statements"
  wanted="$(monitoring_conf "$libs")"
  [ -f "$conf_dir/$MONITORING_CONF" ] && current="$(cat "$conf_dir/$MONITORING_CONF")"
  if [ "$current" != "$wanted" ]; then
    log "writing $conf_dir/$MONITORING_CONF (pg_stat_statements, slow-query log)"
    printf '%s\n' "$wanted" | as_root tee "$conf_dir/$MONITORING_CONF" >/dev/null
    psql_admin -d postgres -tAc "SELECT pg_reload_conf()" >/dev/null
  fi
  if psql_admin -d postgres -tAc "SELECT 1 FROM pg_settings WHERE pending_restart AND name IN
      ('shared_preload_libraries', 'pg_stat_statements.max')" | grep -q 1 \
    || ! psql_admin -d postgres -tAc 'SHOW shared_preload_libraries' | tr ',' '\n' | tr -d ' ' \
      | grep -qx pg_stat_statements; then
    log "restarting cluster $1/$2 to preload pg_stat_statements"
    as_root pg_ctlcluster "$1" "$2" restart
    wait_for "postgres on $PG_HOST:$PG_PORT" 60 ready
  fi
  psql_admin -d postgres -tAc 'SHOW shared_preload_libraries' | tr ',' '\n' | tr -d ' ' \
    | grep -qx pg_stat_statements \
    || die "pg_stat_statements is not preloaded: ALTER SYSTEM (postgresql.auto.conf) overrides $conf_dir/$MONITORING_CONF?"
  if ! psql_admin -d "$PG_DB" -tAc "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'" | grep -q 1; then
    log "creating extension pg_stat_statements in $PG_DB"
    psql_admin -d "$PG_DB" -c "CREATE EXTENSION pg_stat_statements"
  fi
  # pg_monitor: every statement's statistics and text (pg_stat_statements), and
  # what the metrics exporter (ops/exporters/exporters.sh) reads, for the engine's role.
  if ! psql_admin -d postgres -tAc "SELECT pg_has_role('$PG_USER', 'pg_monitor', 'MEMBER')" | grep -q t; then
    psql_admin -d postgres -c "GRANT pg_monitor TO \"$PG_USER\""
  fi
}

up() {
  if ready && [ -z "$(cluster)" ]; then
    log "an external server answers on $PG_HOST:$PG_PORT; using it"
    return 0
  fi
  command -v pg_ctlcluster >/dev/null && [ -n "$(cluster)" ] || apt_install postgresql
  local c; c="$(cluster)"
  [ -n "$c" ] || die "no PostgreSQL cluster after installing postgresql"
  # shellcheck disable=SC2086
  set -- $c
  if ! ready; then
    log "starting cluster $1/$2"
    as_root pg_ctlcluster "$1" "$2" start || true
  fi
  wait_for "postgres on $PG_HOST:$PG_PORT" 60 ready
  ensure_role_and_db
  configure_monitoring "$1" "$2"
}

down() {
  local c; c="$(cluster)"
  [ -n "$c" ] || return 0
  # shellcheck disable=SC2086
  set -- $c
  ready && as_root pg_ctlcluster "$1" "$2" stop || true
}

status() {
  if ready; then
    echo "postgres: up ($PG_HOST:$PG_PORT, database $PG_DB)"
  else
    echo "postgres: down"; return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# PostgreSQL from Debian's packages: the distribution's cluster, plus the
# engine's role and database.
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

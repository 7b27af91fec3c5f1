-- Run once by the postgres image on a new data directory (docker-compose.yml), as the
-- local stack's ops/postgres/postgres.sh does: statement statistics in the engine's
-- database (the server preloads the library: see the service's command).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

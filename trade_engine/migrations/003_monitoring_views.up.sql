-- The seeds' monitoring views (TASK-DB-002), kept beside the tables they watch
-- (one schema per deployment or test) with a monitoring_ prefix instead of a
-- shared `monitoring` schema.

CREATE VIEW monitoring_index_usage AS
SELECT schemaname, relname AS tablename, indexrelname AS indexname,
       idx_scan, idx_tup_read, idx_tup_fetch
FROM pg_stat_user_indexes
ORDER BY idx_scan DESC;

CREATE VIEW monitoring_table_bloat AS
SELECT schemaname, relname AS tablename,
       pg_size_pretty(pg_total_relation_size(relid)) AS size,
       n_live_tup, n_dead_tup,
       round(100.0 * n_dead_tup / NULLIF(n_live_tup + n_dead_tup, 0), 2) AS bloat_pct
FROM pg_stat_user_tables
WHERE n_live_tup > 0
ORDER BY n_dead_tup DESC;

CREATE VIEW monitoring_active_orders_summary AS
SELECT symbol, side, order_type, status,
       count(*) AS order_count,
       sum(quantity - filled_quantity - cancelled_quantity) AS remaining_quantity
FROM orders
WHERE status IN ('PENDING', 'OPEN', 'PARTIALLY_FILLED')
GROUP BY symbol, side, order_type, status;

CREATE VIEW monitoring_daily_trade_volume AS
SELECT (executed_at AT TIME ZONE 'UTC')::date AS trade_date,
       symbol,
       count(*) AS trade_count,
       sum(quantity) AS total_quantity,
       sum(quote_quantity) AS total_volume
FROM trades
WHERE executed_at >= (now() AT TIME ZONE 'UTC')::date - 30
GROUP BY 1, symbol
ORDER BY trade_date DESC, total_volume DESC;

-- Rows the DEFAULT partitions caught: should be 0; alert when it is not.
CREATE VIEW monitoring_default_partition_rows AS
SELECT 'orders'::text AS parent, count(*) AS row_count FROM orders_default
UNION ALL
SELECT 'trades'::text, count(*) FROM trades_default;

-- Slow queries need pg_stat_statements (superuser to install, and
-- shared_preload_libraries); the view exists only where the extension does.
DO $$
DECLARE
  v_ns text;
BEGIN
  SELECT extnamespace::regnamespace::text INTO v_ns
  FROM pg_extension WHERE extname = 'pg_stat_statements';
  IF v_ns IS NOT NULL THEN
    EXECUTE format($v$
      CREATE VIEW monitoring_slow_queries AS
      SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time, rows
      FROM %I.pg_stat_statements
      ORDER BY mean_exec_time DESC
      LIMIT 10
    $v$, v_ns);
  END IF;
END;
$$;

DROP VIEW IF EXISTS monitoring_slow_queries;
DROP VIEW IF EXISTS monitoring_default_partition_rows;
DROP VIEW IF EXISTS monitoring_daily_trade_volume;
DROP VIEW IF EXISTS monitoring_active_orders_summary;
DROP VIEW IF EXISTS monitoring_table_bloat;
DROP VIEW IF EXISTS monitoring_index_usage;

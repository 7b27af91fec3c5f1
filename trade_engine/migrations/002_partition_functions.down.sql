DROP FUNCTION IF EXISTS detach_old_partitions(text, int, int, date);
DROP FUNCTION IF EXISTS create_future_trade_partitions(text, int, date);
DROP FUNCTION IF EXISTS create_future_order_partitions(text, int, date);
DROP FUNCTION IF EXISTS create_range_partition(text, text, text, text, timestamptz, timestamptz);

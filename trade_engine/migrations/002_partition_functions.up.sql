-- Partition maintenance (the seeds' TASK-DB-002 functions, made schema-aware and
-- safe with a DEFAULT partition). Called by the Postgres sink before it writes
-- a month or day it has not seen, on its maintenance schedule, and by
-- `trade-engine db partitions`; usable from psql or pg_cron as well:
--   SELECT create_future_order_partitions('public', 3);
--   SELECT create_future_trade_partitions('public', 30);
--   SELECT * FROM detach_old_partitions('public', 12, 90);

-- Create one range partition [p_from, p_to) of p_schema.p_parent named p_name.
-- Rows already caught by the DEFAULT partition for that range are moved into
-- it first (attaching would otherwise fail). Returns false if it already exists.
CREATE FUNCTION create_range_partition(
  p_schema text, p_parent text, p_key text, p_name text, p_from timestamptz, p_to timestamptz
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_default  text := p_parent || '_default';
  v_has_rows boolean;
BEGIN
  -- Two writers may want the same partition at once (a rebalance, the CLI).
  PERFORM pg_advisory_xact_lock(hashtextextended(p_schema || '.' || p_name, 0));
  IF to_regclass(format('%I.%I', p_schema, p_name)) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE %I >= %L AND %I < %L)',
                 p_schema, v_default, p_key, p_from, p_key, p_to)
    INTO v_has_rows;
  IF v_has_rows THEN
    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   p_schema, p_name, p_schema, p_parent);
    EXECUTE format('WITH moved AS (DELETE FROM %I.%I WHERE %I >= %L AND %I < %L RETURNING *) '
                   'INSERT INTO %I.%I SELECT * FROM moved',
                   p_schema, v_default, p_key, p_from, p_key, p_to, p_schema, p_name);
    EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                   p_schema, p_parent, p_schema, p_name, p_from, p_to);
    RAISE NOTICE 'created partition %.% with rows moved from %', p_schema, p_name, v_default;
  ELSE
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                   p_schema, p_name, p_schema, p_parent, p_from, p_to);
  END IF;
  RETURN true;
END;
$$;

-- Monthly order partitions orders_YYYY_MM (UTC) for p_from's month and the next
-- p_months_ahead months. Returns how many were created.
CREATE FUNCTION create_future_order_partitions(
  p_schema text, p_months_ahead int DEFAULT 3, p_from date DEFAULT (now() AT TIME ZONE 'UTC')::date
) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  v_start   date;
  v_created int := 0;
BEGIN
  FOR i IN 0..p_months_ahead LOOP
    v_start := (date_trunc('month', p_from) + make_interval(months => i))::date;
    IF create_range_partition(
         p_schema, 'orders', 'created_at', 'orders_' || to_char(v_start, 'YYYY_MM'),
         v_start::timestamp AT TIME ZONE 'UTC',
         (v_start + interval '1 month')::timestamp AT TIME ZONE 'UTC') THEN
      v_created := v_created + 1;
    END IF;
  END LOOP;
  RETURN v_created;
END;
$$;

-- Daily trade partitions trades_YYYY_MM_DD (UTC) for p_from and the next p_days_ahead days.
CREATE FUNCTION create_future_trade_partitions(
  p_schema text, p_days_ahead int DEFAULT 30, p_from date DEFAULT (now() AT TIME ZONE 'UTC')::date
) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  v_start   date;
  v_created int := 0;
BEGIN
  FOR i IN 0..p_days_ahead LOOP
    v_start := p_from + i;
    IF create_range_partition(
         p_schema, 'trades', 'executed_at', 'trades_' || to_char(v_start, 'YYYY_MM_DD'),
         v_start::timestamp AT TIME ZONE 'UTC',
         (v_start + 1)::timestamp AT TIME ZONE 'UTC') THEN
      v_created := v_created + 1;
    END IF;
  END LOOP;
  RETURN v_created;
END;
$$;

-- Detach partitions wholly older than the retention (a value <= 0 keeps everything)
-- and rename them archived_<name>: they stay queryable until an operator archives
-- or drops them, and a late row for that range can still get a fresh partition.
CREATE FUNCTION detach_old_partitions(
  p_schema text,
  p_orders_retention_months int DEFAULT 12,
  p_trades_retention_days int DEFAULT 90,
  p_today date DEFAULT (now() AT TIME ZONE 'UTC')::date
) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  r        record;
  v_upper  date;
  v_cutoff date;
BEGIN
  FOR r IN
    SELECT p.relname AS parent, c.relname AS child
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = p_schema
      AND ((p.relname = 'orders' AND c.relname ~ '^orders_[0-9]{4}_[0-9]{2}$')
        OR (p.relname = 'trades' AND c.relname ~ '^trades_[0-9]{4}_[0-9]{2}_[0-9]{2}$'))
    ORDER BY c.relname
  LOOP
    IF r.parent = 'orders' THEN
      CONTINUE WHEN p_orders_retention_months <= 0;
      v_upper := (to_date(substr(r.child, 8), 'YYYY_MM') + interval '1 month')::date;
      v_cutoff := (date_trunc('month', p_today) - make_interval(months => p_orders_retention_months))::date;
    ELSE
      CONTINUE WHEN p_trades_retention_days <= 0;
      v_upper := to_date(substr(r.child, 8), 'YYYY_MM_DD') + 1;
      v_cutoff := p_today - p_trades_retention_days;
    END IF;
    IF v_upper <= v_cutoff THEN
      EXECUTE format('ALTER TABLE %I.%I DETACH PARTITION %I.%I', p_schema, r.parent, p_schema, r.child);
      EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', p_schema, r.child, 'archived_' || r.child);
      RETURN NEXT r.child;
    END IF;
  END LOOP;
END;
$$;

-- The history tables the Postgres sink writes, adapted from the seeds' schema
-- (TASK-DB-001 / TE-102) to the engine's wire data:
--   * ids are the engine's strings (order_id from the client or gateway,
--     trade_id = '<symbol>:<seq>'), not UUIDs;
--   * decimals are unconstrained NUMERIC: every symbol has its own scale;
--   * timestamps are timestamptz (UTC), taken from the execution's `at`, so a
--     replay rebuilds identical rows;
--   * time_in_force has GTD; market buys by funds have no quantity (funds instead);
--   * a partitioned table's primary key must contain the partition key, hence
--     (order_id, created_at) and (trade_id, executed_at); the seeds' foreign keys
--     from trades to orders are dropped for the same reason (and so that the two
--     tables can keep different retentions).
CREATE TYPE order_side_enum AS ENUM ('BUY', 'SELL');
CREATE TYPE order_type_enum AS ENUM ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT');
CREATE TYPE order_status_enum AS ENUM (
  'PENDING', 'OPEN', 'PARTIALLY_FILLED', 'FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED'
);
CREATE TYPE time_in_force_enum AS ENUM ('GTC', 'IOC', 'FOK', 'DAY', 'GTD');

CREATE TABLE orders (
  order_id           text               NOT NULL,
  user_id            text               NOT NULL,
  symbol             varchar(33)        NOT NULL,
  side               order_side_enum    NOT NULL,
  order_type         order_type_enum    NOT NULL,
  status             order_status_enum  NOT NULL DEFAULT 'PENDING',
  quantity           numeric,
  funds              numeric,
  filled_quantity    numeric            NOT NULL DEFAULT 0,
  quote_filled       numeric            NOT NULL DEFAULT 0,
  cancelled_quantity numeric            NOT NULL DEFAULT 0,
  price              numeric,
  stop_price         numeric,
  time_in_force      time_in_force_enum NOT NULL DEFAULT 'GTC',
  post_only          boolean            NOT NULL DEFAULT false,
  stp_mode           text               NOT NULL DEFAULT 'NONE',
  expire_at_ms       bigint,
  client_order_id    varchar(100),
  end_reason         text,
  created_at         timestamptz        NOT NULL,
  updated_at         timestamptz        NOT NULL,
  filled_at          timestamptz,
  cancelled_at       timestamptz,
  accepted_seq       bigint             NOT NULL,
  last_seq           bigint             NOT NULL,

  PRIMARY KEY (order_id, created_at),
  CONSTRAINT chk_quantity_positive CHECK (quantity IS NULL OR quantity > 0),
  CONSTRAINT chk_funds_positive CHECK (funds IS NULL OR funds > 0),
  CONSTRAINT chk_quantity_or_funds CHECK (quantity IS NOT NULL OR funds IS NOT NULL),
  CONSTRAINT chk_filled_not_negative CHECK (
    filled_quantity >= 0 AND quote_filled >= 0 AND cancelled_quantity >= 0
  ),
  CONSTRAINT chk_filled_lte_quantity CHECK (quantity IS NULL OR filled_quantity <= quantity),
  CONSTRAINT chk_market_no_price CHECK (order_type NOT IN ('MARKET', 'STOP') OR price IS NULL),
  CONSTRAINT chk_limit_has_price CHECK (
    order_type NOT IN ('LIMIT', 'STOP_LIMIT') OR price IS NOT NULL
  ),
  CONSTRAINT chk_stop_has_stop_price CHECK (
    (order_type IN ('STOP', 'STOP_LIMIT')) = (stop_price IS NOT NULL)
  ),
  CONSTRAINT chk_seq_order CHECK (last_seq >= accepted_seq)
) PARTITION BY RANGE (created_at);

-- Lookup by id (the gateway's GET /orders/{id}; the sink's updates).
CREATE INDEX idx_orders_order_id ON orders (order_id);
-- A user's orders by symbol, newest first, keyset-paginated on (created_at, order_id).
CREATE INDEX idx_orders_user_symbol_created ON orders (user_id, symbol, created_at DESC, order_id DESC);
-- The seeds' open-orders index (active orders summary, open orders per symbol).
CREATE INDEX idx_orders_symbol_status ON orders (symbol, status)
  WHERE status IN ('PENDING', 'OPEN', 'PARTIALLY_FILLED');
-- Not UNIQUE as in the seeds: a unique index on a partitioned table must contain
-- the partition key; the matcher already refuses duplicate client order ids.
CREATE INDEX idx_orders_client_order ON orders (client_order_id, user_id)
  WHERE client_order_id IS NOT NULL;

-- The safety net: a row whose month has no partition yet lands here instead of
-- failing the insert. The sink creates partitions before it writes, so this stays
-- empty; monitoring_default_partition_rows watches it.
CREATE TABLE orders_default PARTITION OF orders DEFAULT;

CREATE TABLE trades (
  trade_id         text        NOT NULL,
  symbol           varchar(33) NOT NULL,
  seq              bigint      NOT NULL,
  buyer_order_id   text        NOT NULL,
  seller_order_id  text        NOT NULL,
  buyer_user_id    text        NOT NULL,
  seller_user_id   text        NOT NULL,
  price            numeric     NOT NULL,
  quantity         numeric     NOT NULL,
  quote_quantity   numeric     NOT NULL,
  buyer_fee        numeric     NOT NULL DEFAULT 0,
  seller_fee       numeric     NOT NULL DEFAULT 0,
  buyer_fee_asset  text        NOT NULL,
  seller_fee_asset text        NOT NULL,
  is_buyer_maker   boolean     NOT NULL,
  executed_at      timestamptz NOT NULL,
  input_partition  integer     NOT NULL,
  input_offset     bigint      NOT NULL,

  PRIMARY KEY (trade_id, executed_at),
  CONSTRAINT chk_trade_price_positive CHECK (price > 0),
  CONSTRAINT chk_trade_quantity_positive CHECK (quantity > 0),
  CONSTRAINT chk_trade_fees_not_negative CHECK (buyer_fee >= 0 AND seller_fee >= 0),
  CONSTRAINT chk_trade_id CHECK (trade_id = symbol || ':' || seq)
) PARTITION BY RANGE (executed_at);

-- A user's trades by symbol and time (as buyer and as seller), keyset on (executed_at, trade_id).
CREATE INDEX idx_trades_buyer ON trades (buyer_user_id, symbol, executed_at DESC, trade_id DESC);
CREATE INDEX idx_trades_seller ON trades (seller_user_id, symbol, executed_at DESC, trade_id DESC);
-- A symbol's public trade history.
CREATE INDEX idx_trades_symbol_time ON trades (symbol, executed_at DESC, trade_id DESC);

CREATE TABLE trades_default PARTITION OF trades DEFAULT;

-- Where the sink is in te.executions: written in the same transaction as the
-- rows, so the data and the position can never disagree (exactly-once into Postgres).
CREATE TABLE sink_offsets (
  topic       text        NOT NULL,
  partition   integer     NOT NULL,
  next_offset bigint      NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, partition)
);

-- The last execution seq applied per symbol: gap detection and the rebuild's diff horizon.
CREATE TABLE sink_symbol_seq (
  symbol     varchar(33) PRIMARY KEY,
  last_seq   bigint      NOT NULL,
  gaps       bigint      NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);

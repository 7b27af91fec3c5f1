-- The wallet ledger: double entry, append-only journal, cached user balances.
-- Runs with search_path set to the wallet's schema (default "wallet"); names are
-- unqualified on purpose so tests can use a schema of their own.

-- One account per (user, asset, kind). User accounts are 'available' and
-- 'held'; system accounts (user_id '@system') are 'fee' and 'external'
-- (the world outside: deposits and withdrawals). Only user accounts keep a
-- cached balance (updated in the same transaction as their postings, never
-- negative); a system account's balance is the sum of its postings, so no
-- settle waits on a hot fee-account row.
CREATE TABLE accounts (
    account_id bigserial PRIMARY KEY,
    user_id    text NOT NULL,
    asset      text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('available', 'held', 'fee', 'external')),
    balance    numeric(38, 18) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, asset, kind),
    CONSTRAINT accounts_user_kind CHECK (
        (user_id = '@system') = (kind IN ('fee', 'external'))
    ),
    CONSTRAINT accounts_balance_not_negative CHECK (balance >= 0),
    CONSTRAINT accounts_system_balance_not_cached CHECK (user_id <> '@system' OR balance = 0)
);

-- One entry per applied operation: (op, key) is the idempotency key, so a
-- trade id can settle only once.
CREATE TABLE journal_entries (
    entry_id   bigserial PRIMARY KEY,
    op         text NOT NULL CHECK (op IN ('reserve', 'release', 'settle', 'deposit', 'withdraw')),
    key        text NOT NULL,
    ref        text,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (op, key)
);

CREATE TABLE postings (
    posting_id bigserial PRIMARY KEY,
    entry_id   bigint NOT NULL REFERENCES journal_entries (entry_id),
    account_id bigint NOT NULL REFERENCES accounts (account_id),
    asset      text NOT NULL,
    amount     numeric(38, 18) NOT NULL CHECK (amount <> 0)
);
CREATE INDEX postings_entry ON postings (entry_id);
CREATE INDEX postings_account ON postings (account_id);

-- Every entry balances per asset, checked at commit.
CREATE FUNCTION postings_check_balanced() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM postings WHERE entry_id = NEW.entry_id
        GROUP BY asset HAVING sum(amount) <> 0
    ) THEN
        RAISE EXCEPTION 'journal entry % does not balance per asset', NEW.entry_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION postings_check_balanced();

-- The journal is append-only.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the wallet journal is append-only (% on %)', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- An order's hold: what was reserved for it, what trades consumed, what was
-- released. remaining = reserved - settled - released, never negative.
CREATE TABLE holds (
    order_id       text PRIMARY KEY,
    reservation_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    user_id        text NOT NULL,
    asset          text NOT NULL,
    reserved       numeric(38, 18) NOT NULL CHECK (reserved >= 0),
    settled        numeric(38, 18) NOT NULL DEFAULT 0 CHECK (settled >= 0),
    released       numeric(38, 18) NOT NULL DEFAULT 0 CHECK (released >= 0),
    remaining      numeric(38, 18) GENERATED ALWAYS AS (reserved - settled - released) STORED
                   CHECK (remaining >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX holds_open ON holds (user_id, asset) WHERE remaining > 0;

-- Idempotency: the first request's hash and its response, per (op, key).
-- Failed requests leave no row (they had no effect), so they may be retried.
CREATE TABLE operations (
    op           text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    response     jsonb,
    entry_id     bigint REFERENCES journal_entries (entry_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (op, key)
);

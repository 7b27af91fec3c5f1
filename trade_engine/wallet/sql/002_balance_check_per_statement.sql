-- Every journal entry balances per asset: checked once per INSERT statement on
-- postings instead of once per posting row at commit.
--
-- 001 queued a deferred row trigger per posting; at COMMIT each ran a plpgsql call
-- and a grouped sum over its entry's postings, six times for a settled trade. Under
-- load that was the ledger's largest CPU cost and the time account locks were held
-- longest (sampled pg_stat_activity: ~0.8 backends busy in COMMIT at 500 orders/s).
--
-- The statement trigger sees the rows the statement inserted (a transition table)
-- and checks every entry they touch, over all of that entry's postings, so:
-- - an entry whose legs are inserted together (both writers, wallet/ledger.py and
--   wallet/batch.py, insert all legs of an operation in one statement) is checked
--   as before, once;
-- - a posting added later to an existing entry, or legs split across statements,
--   leave an entry unbalanced at the end of a statement and are refused: stricter
--   than the commit-time check, never weaker.
DROP TRIGGER postings_balanced ON postings;
DROP FUNCTION postings_check_balanced();

CREATE FUNCTION postings_check_balanced() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    unbalanced bigint;
BEGIN
    SELECT p.entry_id INTO unbalanced
    FROM postings AS p
    WHERE p.entry_id IN (SELECT DISTINCT entry_id FROM inserted)
    GROUP BY p.entry_id, p.asset
    HAVING sum(p.amount) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance per asset', unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER postings_balanced AFTER INSERT ON postings
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION postings_check_balanced();

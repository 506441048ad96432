-- Least privilege inside the database. This file runs as the schema owner (the cluster's master user, at
-- deploy time); the functions log in as the roles below and can do their job and nothing more.
--
-- tandem_processor: applies batches through ledger_apply() (the exactly-once insert and balance upsert, a
--   SECURITY DEFINER function: it has no INSERT, UPDATE or DELETE on any table of its own) and reads the
--   ledger rows that statement reads back; reads schema_migration to check the schema is new enough.
-- tandem_observer: the replication monitor's Aurora observer; reads and writes replication_heartbeat and
--   reads schema_migration; it cannot see the ledger or the balances. It is a member of pg_monitor (read-only
--   statistics): without it aurora_global_db_status() shows it no replication lag.
-- Neither may create anything: no CREATE on the schema, no temporary tables. In Aurora both log in with IAM
-- database authentication (membership in rds_iam); a role without a password cannot log in otherwise.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tandem_processor') THEN
        CREATE ROLE tandem_processor LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tandem_observer') THEN
        CREATE ROLE tandem_observer LOGIN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO tandem_processor, tandem_observer;
    END IF;
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$roles$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO tandem_processor, tandem_observer;
REVOKE ALL ON ledger_transaction, account_balance, replication_heartbeat, schema_migration FROM PUBLIC;

-- The exactly-once statement (see tandem_core.ledger): insert the new rows, apply the balance effect of
-- exactly the rows inserted, answer per transaction what the ledger now holds.
CREATE FUNCTION ledger_apply(
    p_ids uuid[], p_accounts text[], p_counterparties text[], p_amounts bigint[], p_currencies text[],
    p_created timestamptz[], p_hashes text[], p_messages text[]
) RETURNS TABLE (
    o_transaction_id text, o_inserted boolean, o_account_id text, o_counterparty_id text, o_amount_minor bigint,
    o_currency text, o_created_at timestamptz, o_message_id text, o_balances bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $apply$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_ids, p_accounts, p_counterparties, p_amounts, p_currencies, p_created, p_hashes,
                             p_messages)
            AS t(transaction_id, account_id, counterparty_id, amount_minor, currency, created_at, payload_hash,
                 message_id)
    ),
    inserted AS (
        INSERT INTO ledger_transaction AS l
            (transaction_id, account_id, counterparty_id, amount_minor, currency, created_at, payload_hash,
             message_id)
        SELECT i.transaction_id, i.account_id, i.counterparty_id, i.amount_minor, i.currency, i.created_at,
               i.payload_hash, i.message_id
        FROM input i ORDER BY i.transaction_id
        ON CONFLICT (transaction_id) DO NOTHING
        RETURNING l.transaction_id, l.account_id, l.counterparty_id, l.amount_minor, l.currency
    ),
    legs AS (
        SELECT n.account_id, n.currency, -n.amount_minor AS delta FROM inserted n
        UNION ALL
        SELECT n.counterparty_id, n.currency, n.amount_minor FROM inserted n
    ),
    balances AS (
        INSERT INTO account_balance AS b (account_id, currency, balance_minor)
        SELECT g.account_id, g.currency, sum(g.delta) FROM legs g GROUP BY g.account_id, g.currency
        ORDER BY g.account_id, g.currency
        ON CONFLICT (account_id, currency) DO UPDATE SET balance_minor = b.balance_minor + EXCLUDED.balance_minor
        RETURNING 1
    )
    SELECT CAST(i.transaction_id AS text), n.transaction_id IS NOT NULL, e.account_id, e.counterparty_id,
           e.amount_minor, CAST(e.currency AS text), e.created_at, e.message_id, (SELECT count(*) FROM balances)
    FROM input i
    LEFT JOIN inserted n ON n.transaction_id = i.transaction_id
    LEFT JOIN ledger_transaction e ON e.transaction_id = i.transaction_id;
END
$apply$;

REVOKE ALL ON FUNCTION ledger_apply FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_apply TO tandem_processor;
GRANT SELECT ON ledger_transaction, schema_migration TO tandem_processor;
GRANT SELECT, INSERT, UPDATE ON replication_heartbeat TO tandem_observer;
GRANT SELECT ON schema_migration TO tandem_observer;
GRANT pg_monitor TO tandem_observer;

-- The ledger is append-only: no role has UPDATE or DELETE on it but its owner, and the owner too is refused
-- unless the transaction says, deliberately, SET LOCAL tandem.ledger_amend = 'on'.
CREATE FUNCTION ledger_transaction_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp
AS $guard$
BEGIN
    IF coalesce(current_setting('tandem.ledger_amend', true), '') <> 'on' THEN
        RAISE EXCEPTION 'the ledger is append-only: % on ledger_transaction refused', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the owner may amend it deliberately: SET LOCAL tandem.ledger_amend = ''on'' in the same transaction';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD WHEN 'UPDATE' THEN NEW ELSE NULL END;
END
$guard$;

CREATE TRIGGER ledger_transaction_append_only BEFORE UPDATE OR DELETE ON ledger_transaction
    FOR EACH ROW EXECUTE FUNCTION ledger_transaction_append_only();
CREATE TRIGGER ledger_transaction_no_truncate BEFORE TRUNCATE ON ledger_transaction
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_transaction_append_only();

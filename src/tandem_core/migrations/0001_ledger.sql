-- The ledger: one row per transfer (unique on transaction_id) and one balance per (account, currency).
-- Amounts are integer minor units of the currency; a transfer debits account_id and credits counterparty_id.
CREATE TABLE ledger_transaction (
    transaction_id   uuid        PRIMARY KEY,
    account_id       text        NOT NULL,
    counterparty_id  text        NOT NULL,
    amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
    currency         char(3)     NOT NULL,
    created_at       timestamptz NOT NULL,
    payload_hash     char(64)    NOT NULL,
    message_id       text        NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (account_id <> counterparty_id)
);

CREATE INDEX ledger_transaction_committed_at ON ledger_transaction (committed_at);

CREATE TABLE account_balance (
    account_id     text    NOT NULL,
    currency       char(3) NOT NULL,
    balance_minor  bigint  NOT NULL,
    PRIMARY KEY (account_id, currency)
);

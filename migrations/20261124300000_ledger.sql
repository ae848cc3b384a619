-- The double-entry ledger, finality by proof, batched exactly-once projection and the
-- list position (issue 17). Additive: existing rows keep their meaning.

-- Current state: where it was read (stream epoch beside the sequence), what the
-- payment is (terms carried on every transition) and how much of it the ledger
-- currently recognises (`ledger_minor`, in `currency`), so the next transition's
-- postings are the difference between what its status implies and what is posted.
ALTER TABLE payments
    ADD COLUMN status_epoch   TEXT    NOT NULL DEFAULT '',
    ADD COLUMN amount_minor   BIGINT,
    ADD COLUMN currency       TEXT,
    ADD COLUMN rail           TEXT,
    ADD COLUMN country        TEXT,
    ADD COLUMN provider       TEXT,
    ADD COLUMN provider_ref   TEXT,
    ADD COLUMN ledger_minor   BIGINT  NOT NULL DEFAULT 0;

-- The list: filter by merchant and/or status, page by payment id.
CREATE INDEX payments_list ON payments (tenant, merchant_id, status, payment_id);
CREATE INDEX payments_by_status ON payments (tenant, status, payment_id);

-- The timeline row names the provider's reference and the stream incarnation too.
ALTER TABLE payment_timeline
    ADD COLUMN provider_ref  TEXT,
    ADD COLUMN status_epoch  TEXT NOT NULL DEFAULT '';

-- The capability snapshot and routing decision a payment was created on, copied from
-- its create command fact (PAYTRACK_IN), whichever consumer gets there first.
CREATE TABLE payment_decisions (
    tenant        TEXT        NOT NULL,
    payment_id    TEXT        NOT NULL,
    fact_id       TEXT        NOT NULL,
    routing       JSON,
    capabilities  JSON,
    program       TEXT,
    customer_ref  TEXT,
    received_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, payment_id)
);

-- Chart of accounts, per tenant and currency. `kind` says which side is natural.
CREATE TABLE ledger_accounts (
    tenant    TEXT NOT NULL,
    account   TEXT NOT NULL,
    currency  TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('asset', 'liability', 'revenue', 'expense')),
    PRIMARY KEY (tenant, account, currency)
);

-- One journal entry per money-moving transition, keyed by the version it posts, so a
-- replay cannot post twice.
CREATE TABLE journal_entries (
    tenant       TEXT        NOT NULL,
    payment_id   TEXT        NOT NULL,
    version      BIGINT      NOT NULL,
    entry_kind   TEXT        NOT NULL,
    status       TEXT        NOT NULL,
    status_seq   BIGINT      NOT NULL,
    trace_id     TEXT        NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, payment_id, version)
);

-- Legs in integer minor units: debit positive, credit negative.
CREATE TABLE ledger_postings (
    tenant        TEXT   NOT NULL,
    payment_id    TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    leg           INT    NOT NULL,
    account       TEXT   NOT NULL,
    currency      TEXT   NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor <> 0),
    PRIMARY KEY (tenant, payment_id, version, leg),
    FOREIGN KEY (tenant, payment_id, version) REFERENCES journal_entries (tenant, payment_id, version),
    FOREIGN KEY (tenant, account, currency) REFERENCES ledger_accounts (tenant, account, currency)
);

CREATE INDEX ledger_postings_by_account ON ledger_postings (tenant, account, currency);

-- The database itself refuses an entry whose legs do not sum to zero per currency:
-- checked at commit (deferred), so the legs of one entry may be written by several
-- statements of one transaction, and no code path can commit an unbalanced entry.
CREATE FUNCTION ledger_entry_balances() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced RECORD;
BEGIN
    SELECT currency, sum(amount_minor) AS total INTO unbalanced
      FROM ledger_postings
     WHERE tenant = NEW.tenant AND payment_id = NEW.payment_id AND version = NEW.version
     GROUP BY currency
    HAVING sum(amount_minor) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry %/%/% does not balance in %: legs sum to %',
            NEW.tenant, NEW.payment_id, NEW.version, unbalanced.currency, unbalanced.total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_postings_balance
    AFTER INSERT ON ledger_postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_balances();

-- The ledger is append-only: a correction is a new entry, never an edit.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- Checkpoints: the finality each one carries, and the sequence at which the
-- projector read it back from PAYTRACK_STATUS (a payment is final only once both of
-- its version's checkpoints are read back, so only after both exist in the stream).
ALTER TABLE checkpoint_outbox
    ADD COLUMN is_final     BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN observed_seq BIGINT;

-- Per-instance progress: each projector instance records, in the same transaction as
-- each batch it applies, the highest PAYTRACK_STATUS sequence of that batch.
CREATE TABLE projector_progress (
    instance     TEXT        NOT NULL,
    stream       TEXT        NOT NULL,
    epoch        TEXT        NOT NULL,
    max_seq      BIGINT      NOT NULL,
    applied      BIGINT      NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, stream, epoch)
);

-- The safe low-water mark of a stream: every message at or below `seq` (of `epoch`)
-- is in the projection. Copied from the shared durable consumer's ack floor, which
-- JetStream computes over every instance (a message is acknowledged only after the
-- transaction that applied it committed).
CREATE TABLE projector_positions (
    stream      TEXT        NOT NULL PRIMARY KEY,
    epoch       TEXT        NOT NULL,
    seq         BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Session audit keyed by the stream's incarnation too, so a recreated
-- PAYTRACK_SESSION (sequences restarting at 1) cannot collide with old records.
ALTER TABLE session_audit ADD COLUMN session_epoch TEXT NOT NULL DEFAULT '';
ALTER TABLE session_audit DROP CONSTRAINT session_audit_pkey;
ALTER TABLE session_audit ADD PRIMARY KEY (session_epoch, session_seq);
CREATE INDEX session_audit_wide_channels ON session_audit (tenant, channel, session_seq) WHERE kind = 'subscribe';

-- The checkpoints a version owes, one row per version instead of one per checkpoint.
-- A row keeps what its `persisted` and `ledger_posted` messages are built from (the
-- subject, message id, payload and traceparent follow from it), not the encoded
-- messages, so it stays narrow; it is written with the timeline row it confirms and
-- updated once, when JetStream acknowledges its checkpoints. The drainer publishes
-- what a row still lacks.
--
-- Finality is read from here rather than kept on `payments`: a payment is final when
-- the row of its current version has both checkpoints stored and says final, so
-- confirming a checkpoint writes no second row version of the payment.
CREATE TABLE checkpoints (
    tenant            TEXT        NOT NULL,
    payment_id        TEXT        NOT NULL,
    version           BIGINT      NOT NULL,
    merchant_id       TEXT        NOT NULL,
    status            TEXT        NOT NULL,
    trace_id          TEXT        NOT NULL,
    -- When the checkpoints were reached (their `recorded_at`).
    created_at        TIMESTAMPTZ NOT NULL,
    -- Whether a `ledger_posted` checkpoint is owed (the version's postings are written).
    ledger_posted_due BOOLEAN     NOT NULL,
    -- Whether `ledger_posted` says final (terminal on the payment's rail).
    is_final          BOOLEAN     NOT NULL,
    -- PAYTRACK_STATUS sequences of the stored checkpoints.
    persisted_seq     BIGINT,
    ledger_posted_seq BIGINT,
    -- Set once every checkpoint the version owes is stored.
    published_at      TIMESTAMPTZ,
    PRIMARY KEY (tenant, payment_id, version),
    CHECK (ledger_posted_due OR NOT is_final)
) WITH (fillfactor = 70);

CREATE INDEX checkpoints_unpublished ON checkpoints (created_at) WHERE published_at IS NULL;

INSERT INTO checkpoints (tenant, payment_id, version, merchant_id, status, trace_id, created_at,
                         ledger_posted_due, is_final, persisted_seq, ledger_posted_seq, published_at)
SELECT o.tenant, o.payment_id, o.version, p.merchant_id, t.status, t.trace_id, min(o.created_at),
       bool_or(o.kind = 'ledger_posted'), bool_or(o.kind = 'ledger_posted' AND o.is_final),
       min(COALESCE(o.observed_seq, o.published_seq)) FILTER (WHERE o.kind = 'persisted'),
       min(COALESCE(o.observed_seq, o.published_seq)) FILTER (WHERE o.kind = 'ledger_posted'),
       CASE WHEN bool_and(o.published_at IS NOT NULL) THEN max(o.published_at) END
FROM checkpoint_outbox o
JOIN payments p ON p.tenant = o.tenant AND p.payment_id = o.payment_id
JOIN payment_timeline t ON t.tenant = o.tenant AND t.payment_id = o.payment_id AND t.version = o.version
GROUP BY o.tenant, o.payment_id, o.version, p.merchant_id, t.status, t.trace_id;

DROP TABLE checkpoint_outbox;

ALTER TABLE payments DROP COLUMN final;

-- No query reads payments by merchant in `updated_at` order (the list pages by
-- payment id through `payments_list`); the index only cost every upsert a write.
DROP INDEX payments_by_merchant;

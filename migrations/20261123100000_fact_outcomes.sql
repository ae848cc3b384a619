-- What each fact did (PAYTRACK_OUTCOME): applied, duplicate, refused by the status
-- model, or unmapped. Keyed by the fact's position in PAYTRACK_IN, so a redelivered
-- outcome is stored once and the first outcome of a message stands.

CREATE TABLE fact_outcomes (
    tenant           TEXT        NOT NULL,
    payment_id       TEXT        NOT NULL,
    inbound_seq      BIGINT      NOT NULL,
    fact_id          TEXT        NOT NULL,
    outcome          TEXT        NOT NULL,
    reason           TEXT,
    rule             TEXT,
    event_type       TEXT,
    -- The version the fact created (applied only).
    version          BIGINT,
    -- The payment's version the decision was made against.
    current_version  BIGINT,
    trace_id         TEXT        NOT NULL,
    -- PAYTRACK_OUTCOME sequence of the record.
    outcome_seq      BIGINT      NOT NULL,
    decided_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, payment_id, inbound_seq)
);

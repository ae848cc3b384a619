-- Payment alerts (PAYTRACK_ALERT: unclear_pending, source_mismatch, trace_gap), as
-- the reconciler raised them, and operators' acknowledgements of them (the audit:
-- who, when, why; the first acknowledgement stands).

CREATE TABLE alerts (
    tenant       TEXT        NOT NULL,
    alert_id     TEXT        NOT NULL,
    kind         TEXT        NOT NULL,
    payment_id   TEXT        NOT NULL,
    merchant_id  TEXT,
    detail       TEXT        NOT NULL,
    evidence     TEXT        NOT NULL,
    raised_at    TIMESTAMPTZ NOT NULL,
    trace_id     TEXT        NOT NULL,
    -- PAYTRACK_ALERT sequence of the record.
    alert_seq    BIGINT      NOT NULL,
    PRIMARY KEY (tenant, alert_id)
);
CREATE INDEX alerts_by_time ON alerts (tenant, raised_at DESC, alert_seq DESC);

CREATE TABLE alert_acks (
    tenant     TEXT        NOT NULL,
    alert_id   TEXT        NOT NULL,
    actor      TEXT        NOT NULL,
    note       TEXT,
    acked_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, alert_id),
    FOREIGN KEY (tenant, alert_id) REFERENCES alerts (tenant, alert_id)
);

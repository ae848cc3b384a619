-- The projection of PAYTRACK_STATUS and PAYTRACK_IN: current state, timeline and raw
-- evidence. Every table is keyed so that re-applying a message changes nothing.

CREATE TABLE payments (
    tenant          TEXT        NOT NULL,
    payment_id      TEXT        NOT NULL,
    merchant_id     TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    version         BIGINT      NOT NULL,
    -- PAYTRACK_STATUS sequence of the transition that set this version.
    status_seq      BIGINT      NOT NULL,
    final           BOOLEAN     NOT NULL DEFAULT FALSE,
    trace_id        TEXT        NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, payment_id)
);

CREATE INDEX payments_by_merchant ON payments (tenant, merchant_id, updated_at DESC);

CREATE TABLE payment_timeline (
    tenant            TEXT        NOT NULL,
    payment_id        TEXT        NOT NULL,
    version           BIGINT      NOT NULL,
    status            TEXT        NOT NULL,
    previous_status   TEXT,
    status_seq        BIGINT      NOT NULL,
    fact_id           TEXT        NOT NULL,
    source            TEXT        NOT NULL,
    provider_event_id TEXT,
    rule              TEXT        NOT NULL,
    inbound_seq       BIGINT      NOT NULL,
    trace_id          TEXT        NOT NULL,
    occurred_at       TIMESTAMPTZ NOT NULL,
    recorded_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, payment_id, version)
);

CREATE TABLE inbound_facts (
    tenant        TEXT        NOT NULL,
    fact_id       TEXT        NOT NULL,
    payment_id    TEXT        NOT NULL,
    inbound_seq   BIGINT      NOT NULL,
    source        JSONB       NOT NULL,
    raw_headers   JSONB       NOT NULL,
    raw_body      TEXT        NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, fact_id)
);

CREATE INDEX inbound_facts_by_payment ON inbound_facts (tenant, payment_id, inbound_seq);

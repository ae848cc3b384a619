-- Session audit from PAYTRACK_SESSION: who opened which session, what each subscribe
-- or resume returned, how it closed. Keyed by the stream sequence, so a redelivered
-- record is stored once.

CREATE TABLE session_audit (
    session_seq  BIGINT      PRIMARY KEY,
    tenant       TEXT        NOT NULL,
    session_id   TEXT        NOT NULL,
    subject      TEXT        NOT NULL,
    edge_id      TEXT        NOT NULL,
    transport    TEXT        NOT NULL,
    kind         TEXT        NOT NULL,
    channel      TEXT,
    detail       JSONB       NOT NULL,
    at           TIMESTAMPTZ NOT NULL
);

CREATE INDEX session_audit_by_session ON session_audit (tenant, session_id, session_seq);
CREATE INDEX session_audit_by_channel ON session_audit (tenant, channel, at) WHERE channel IS NOT NULL;

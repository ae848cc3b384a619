-- Evidence is stored faithfully whatever it holds. PostgreSQL's TEXT cannot hold a
-- NUL and JSONB cannot hold \u0000, so a fact carrying either was refused and its
-- consumer stalled. The raw body becomes bytes, exactly as received; the parsed
-- event and the selected headers become JSON (kept as the envelope's own text, so
-- \u0000 survives; `->>` on such a string errors, `->` and whole-column reads work).
ALTER TABLE inbound_facts
    ALTER COLUMN raw_body    TYPE BYTEA USING convert_to(raw_body, 'UTF8'),
    ALTER COLUMN source      TYPE JSON  USING source::json,
    ALTER COLUMN raw_headers TYPE JSON  USING raw_headers::json;

-- The checkpoints a projection transaction made due, and whether each is published.
-- A row is written in the same transaction as the timeline row it confirms and is
-- published (after commit) only while `published_at` is NULL, so a replay of the
-- stream long after JetStream forgot the checkpoint's message id publishes nothing.
-- A drainer publishes rows left unpublished by a crash.
CREATE TABLE checkpoint_outbox (
    tenant        TEXT        NOT NULL,
    payment_id    TEXT        NOT NULL,
    version       BIGINT      NOT NULL,
    kind          TEXT        NOT NULL,
    subject       TEXT        NOT NULL,
    msg_id        TEXT        NOT NULL,
    -- The encoded checkpoint envelope, published as is (also by the drainer).
    payload       BYTEA       NOT NULL,
    traceparent   TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- PAYTRACK_STATUS sequence of the published checkpoint.
    published_seq BIGINT,
    published_at  TIMESTAMPTZ,
    PRIMARY KEY (tenant, payment_id, version, kind)
);

CREATE INDEX checkpoint_outbox_unpublished ON checkpoint_outbox (created_at) WHERE published_at IS NULL;

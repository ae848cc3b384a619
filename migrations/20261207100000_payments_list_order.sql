-- The payments list pages by time (newest first by default) with a cursor on
-- (time, payment_id), and looks a payment up by its provider reference or trace id.
CREATE INDEX IF NOT EXISTS payments_by_created ON payments (tenant, created_at DESC, payment_id DESC);
CREATE INDEX IF NOT EXISTS payments_by_updated ON payments (tenant, updated_at DESC, payment_id DESC);
CREATE INDEX IF NOT EXISTS payments_by_provider_ref ON payments (tenant, provider_ref);
CREATE INDEX IF NOT EXISTS payments_by_trace ON payments (tenant, trace_id);

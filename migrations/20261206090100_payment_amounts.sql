-- Where a payment's money is (captured, refunded, returned, disputed, net), carried
-- on every transition, and its movements (refunds, disputes) per version. Additive:
-- rows projected before keep NULL and read as their status implied.
ALTER TABLE payments
    ADD COLUMN amounts        JSONB,
    -- When the money was captured, and until when refunds and disputes may still
    -- take it back (the rail's money windows): the amount at risk.
    ADD COLUMN captured_at    TIMESTAMPTZ,
    ADD COLUMN at_risk_until  TIMESTAMPTZ;

ALTER TABLE payment_timeline
    ADD COLUMN amounts    JSONB,
    ADD COLUMN movements  JSONB;

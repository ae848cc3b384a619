-- Every alert kind is stored and listed, `dead_letter` included: a parked message
-- concerns no payment (its alert names the stream, the consumer and the parked
-- copy), so an alert's payment becomes optional.
ALTER TABLE alerts ALTER COLUMN payment_id DROP NOT NULL;

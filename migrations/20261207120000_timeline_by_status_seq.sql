-- The projector looks up its newest projected transitions by their PAYTRACK_STATUS
-- sequence, to notice when the stream lost them (a damaged message block): the newest
-- one every few seconds, and those past the consumer's floor when the floor moves back.
CREATE INDEX payment_timeline_by_status_seq ON payment_timeline (status_seq DESC);

-- Every checkpoint_outbox row is updated twice after its insert: marked published
-- (after the publish's ack) and observed (read back from PAYTRACK_STATUS). Room on
-- each page lets those new row versions stay on the row's own page, and the
-- observed mark (no indexed column changes) be a heap-only update, which writes no
-- index entries. Applies to pages written from now on.
ALTER TABLE checkpoint_outbox SET (fillfactor = 50);

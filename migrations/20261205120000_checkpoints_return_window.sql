-- A success on a reversible rail (ach_debit) is not final when it is posted: it turns
-- final once the last of its rail's return windows has closed with the payment still
-- at that version. The row of such a version keeps when that is (`final_after`,
-- decided by the projector from the status model when it applies the transition) and,
-- once a `return_window_closed` checkpoint is stored, its sequence; `is_final` then
-- becomes true, so finality is still read from this one row.
ALTER TABLE checkpoints
    ADD COLUMN final_after       TIMESTAMPTZ,
    ADD COLUMN window_closed_seq BIGINT;

-- What the projector's window scan reads: versions still waiting for their window.
CREATE INDEX checkpoints_awaiting_window ON checkpoints (final_after)
    WHERE final_after IS NOT NULL AND NOT is_final;

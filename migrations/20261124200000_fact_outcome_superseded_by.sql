-- The applied fact a stale, duplicate, refused or conflicting fact lost to, so the
-- timeline shows each fact that changed nothing beside the one that superseded it.
ALTER TABLE fact_outcomes ADD COLUMN superseded_by TEXT;

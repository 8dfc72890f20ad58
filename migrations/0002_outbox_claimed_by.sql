-- Which relay holds a claim, so a relay that stops gracefully can hand back
-- the rows it claimed but did not deliver instead of leaving them to the lease.
ALTER TABLE outbox ADD COLUMN claimed_by uuid NULL;

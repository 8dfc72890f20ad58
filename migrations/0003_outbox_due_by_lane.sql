-- Due rows indexed per relay lane. With one index for both, a claim of
-- emails stepped over every event and reply waiting to be published and
-- every email already claimed ahead of it, thousands of rows per claim
-- under load; now each lane's claim reads its own rows only. The backlog
-- gauge counts both.
CREATE INDEX outbox_due_emails_idx ON outbox (available_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL AND kind = 'email';
CREATE INDEX outbox_due_publications_idx ON outbox (available_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL AND kind <> 'email';
DROP INDEX outbox_due_idx;

-- One person per mailbox: every user has its address's canonical key
-- (`domain::email::EmailKey`: local part NFC-normalized and lowercased,
-- domain in its IDNA ASCII form), and uniqueness and every lookup compare
-- keys. `lower(email)` did not: PostgreSQL lowercases with the database's
-- locale and the worker with Unicode's rules (`İ`), and neither knows that
-- `müller.example` and `xn--mller-kva.example` are one domain. The address
-- as typed stays in `email`, for sending mail and for display.
--
-- SQL cannot compute the key (no IDNA, no NFC with the worker's Unicode
-- version), so this migration only adds the column, nullable, and the
-- worker fills it at start-up, before it consumes a command
-- (`store::email_keys::backfill`): the rows without a key, oldest first, in
-- batches, under an advisory lock so that replicas starting together take
-- turns. Where two rows have one key, the older keeps it and the younger
-- gets `<key> <its own user id>` (a space never occurs in a key, so that
-- marker can never match a lookup, and it is unique): both users stay, the
-- younger is no longer found by its address, and the worker logs a warning
-- with both user ids and counts it in `email_key_collisions_total`, for
-- someone to decide which one is the person. Find them with
-- `SELECT id, email, email_key FROM users WHERE email_key LIKE '% %'`.
-- Every user written after the back-fill gets its key with its row.
--
-- Run this with the workers of the old version stopped: they neither write
-- the key nor find the index their inserts name.
ALTER TABLE users ADD COLUMN email_key text NULL;

DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (email_key);

-- The back-fill's worklist; empty once it is done, so a start-up with
-- nothing to fill reads one empty index page.
CREATE INDEX users_email_key_missing_idx ON users (created_at, id) WHERE email_key IS NULL;

-- users{status} without counting every user every few seconds. Each
-- statement that adds users, removes them or changes their status adds its
-- net change per status here (statement triggers, so a batch of invites or
-- a sweep batch adds one row per status it changed, not one per user); the
-- gauge sums the rows and folds them back to one per status. Counting the
-- users table instead read all of it every 5 s in every replica.
CREATE TABLE user_status_changes (
    status text NOT NULL,
    delta  bigint NOT NULL
);

CREATE FUNCTION user_status_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_status_changes (status, delta)
    SELECT status, count(*) FROM inserted_users GROUP BY status;
    RETURN NULL;
END
$$;

CREATE FUNCTION user_status_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_status_changes (status, delta)
    SELECT change.status, sum(change.delta)
    FROM old_users o
    JOIN new_users n USING (id)
    CROSS JOIN LATERAL (VALUES (o.status, -1), (n.status, 1)) AS change (status, delta)
    WHERE o.status <> n.status
    GROUP BY change.status;
    RETURN NULL;
END
$$;

CREATE FUNCTION user_status_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_status_changes (status, delta)
    SELECT status, -count(*) FROM deleted_users GROUP BY status;
    RETURN NULL;
END
$$;

CREATE FUNCTION user_status_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM user_status_changes;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_status_inserted AFTER INSERT ON users
    REFERENCING NEW TABLE AS inserted_users
    FOR EACH STATEMENT EXECUTE FUNCTION user_status_inserted();
CREATE TRIGGER users_status_updated AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_users NEW TABLE AS new_users
    FOR EACH STATEMENT EXECUTE FUNCTION user_status_updated();
CREATE TRIGGER users_status_deleted AFTER DELETE ON users
    REFERENCING OLD TABLE AS deleted_users
    FOR EACH STATEMENT EXECUTE FUNCTION user_status_deleted();
CREATE TRIGGER users_status_truncated AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION user_status_truncated();

-- The users there already (the triggers' lock on users keeps writers out
-- until this migration commits, so none is counted twice or missed).
INSERT INTO user_status_changes (status, delta)
SELECT status, count(*) FROM users GROUP BY status;

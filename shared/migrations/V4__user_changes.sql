-- Every committed change to a user, whoever wrote it (this API, a migration,
-- a support engineer's SQL, an erasure job, another service): a trigger
-- records the user's id in the same transaction, so the record commits with
-- the change or not at all, and no writer can skip it. The invalidate-cache
-- function voids each recorded user's cache key and deletes the record
-- (docs/cache.md, "Writers outside the API").
CREATE TABLE user_changes (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid        NOT NULL,
    -- When the changing statement ran: a little before its commit, so the lag
    -- measured from it is an upper bound.
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- SECURITY DEFINER: a writer allowed to change users need not be granted
-- anything on user_changes. The search_path is fixed to the one this
-- migration ran with, so the function finds this schema's table whoever
-- calls it.
CREATE FUNCTION record_user_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO user_changes (user_id) VALUES (OLD.id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id) THEN
        INSERT INTO user_changes (user_id) VALUES (NEW.id);
    END IF;
    -- Delivered at commit, once per transaction (duplicates are folded), to
    -- the consumers listening; the payload names the schema, since several
    -- schemas of one database may hold this table.
    PERFORM pg_notify('user_changes', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_record_change
    AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION record_user_change();
-- Fires for replicated changes too (session_replication_role = replica, as
-- logical replication and some restore tools set it).
ALTER TABLE users ENABLE ALWAYS TRIGGER users_record_change;

-- TRUNCATE fires no row trigger, so it would change users without a record.
-- It is refused; DELETE FROM users does the same and is recorded.
CREATE FUNCTION refuse_users_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE users would leave its users in the cache; use DELETE FROM users'
        USING HINT = 'docs/cache.md, "Writers outside the API"';
END
$$;

CREATE TRIGGER users_refuse_truncate
    BEFORE TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_users_truncate();
ALTER TABLE users ENABLE ALWAYS TRIGGER users_refuse_truncate;

-- Shared pools kept right in the database itself (SPEC §6).
--
-- Pool rows are created lazily, by the first charge of a user and quota group;
-- a missing row means a full pool (quota = max = 2 x the user's enabled shared
-- accounts), as the account_candidates query reads it. Every row that exists is
-- kept right by the trigger below, whatever changes an account: adding it,
-- re-authorising, enabling, disabling (by hand or automatically), converting
-- between dedicated and shared, moving it or deleting it.
--
-- All changes to one user's pools (resizing and charging) take a lock on the
-- user's row first, so two transactions never resize or create a pool from a
-- stale count of accounts.

-- Recovery: 0.2 x max per hour since "since", continuously, never above max.
-- Elapsed time never counts negative (a transaction that started earlier than the
-- last recovery adds nothing), so running recovery twice recovers once.
CREATE FUNCTION pool_recovered(quota double precision, max_quota double precision, since timestamptz)
RETURNS double precision
LANGUAGE sql STABLE
AS $$
    SELECT least(max_quota,
                 quota + 0.2::float8 * max_quota
                         * greatest(0::float8, extract(epoch FROM now() - since)::float8) / 3600.0)
$$;

-- The user's current pool max: 2 x enabled shared accounts.
CREATE FUNCTION pool_max(p_user bigint)
RETURNS double precision
LANGUAGE sql STABLE
AS $$
    SELECT 2.0::float8 * count(*) FROM accounts
    WHERE user_id = p_user AND is_shared = 1 AND status = 1
$$;

-- Bring the user's existing pool rows to the current max: recovery is accrued at
-- the old max up to now, then the balance rises by the increase (capped at the
-- new max) or is capped at the new max when it falls. Rows already at the right
-- max are untouched, so a change that does not move the max changes nothing.
CREATE FUNCTION pool_resize(p_user bigint)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    new_max double precision;
BEGIN
    PERFORM 1 FROM users WHERE user_id = p_user FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- the user is being deleted; its pools go with it
    END IF;
    -- A statement after the lock: in READ COMMITTED it sees every committed change.
    new_max := pool_max(p_user);
    UPDATE shared_pools p
    SET quota = CASE
                    WHEN new_max > p.max_quota
                    THEN least(new_max, pool_recovered(p.quota, p.max_quota, p.last_recovered_at)
                                        + (new_max - p.max_quota))
                    ELSE least(new_max, pool_recovered(p.quota, p.max_quota, p.last_recovered_at))
                END,
        max_quota = new_max,
        last_recovered_at = greatest(p.last_recovered_at, now())
    WHERE p.user_id = p_user AND p.max_quota <> new_max;
END
$$;

-- Charge one user's pool for one quota group; creates the row (full, then charged)
-- when it does not exist yet. Recovery is accrued before the charge; the balance
-- never goes below 0. Returns the new balance (NULL if the user is gone).
CREATE FUNCTION pool_charge(p_user bigint, p_group text, p_amount double precision)
RETURNS double precision
LANGUAGE plpgsql
AS $$
DECLARE
    current_max double precision;
    balance double precision;
BEGIN
    PERFORM 1 FROM users WHERE user_id = p_user FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    current_max := pool_max(p_user);
    INSERT INTO shared_pools AS p (user_id, quota_group, quota, max_quota, last_recovered_at)
    VALUES (p_user, p_group, greatest(0::float8, current_max - p_amount), current_max, now())
    ON CONFLICT (user_id, quota_group) DO UPDATE
    SET quota = greatest(0::float8, pool_recovered(p.quota, p.max_quota, p.last_recovered_at) - p_amount),
        last_recovered_at = greatest(p.last_recovered_at, now())
    RETURNING p.quota INTO balance;
    RETURN balance;
END
$$;

CREATE FUNCTION accounts_pool_sync()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pool_resize(NEW.user_id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pool_resize(OLD.user_id);
    ELSIF NEW.user_id = OLD.user_id THEN
        PERFORM pool_resize(NEW.user_id);
    ELSE
        -- An account moved between users: lock in id order.
        PERFORM pool_resize(least(OLD.user_id, NEW.user_id));
        PERFORM pool_resize(greatest(OLD.user_id, NEW.user_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_pool_max_insert_delete
AFTER INSERT OR DELETE ON accounts
FOR EACH ROW EXECUTE FUNCTION accounts_pool_sync();

-- A re-authorisation that leaves status and is_shared alone does not fire this.
CREATE TRIGGER accounts_pool_max_update
AFTER UPDATE OF status, is_shared, user_id ON accounts
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      OR OLD.is_shared IS DISTINCT FROM NEW.is_shared
      OR OLD.user_id IS DISTINCT FROM NEW.user_id)
EXECUTE FUNCTION accounts_pool_sync();

-- A drop a quota read saw while no finished request of that account and group was
-- waiting for settlement (the requests that caused it were still in flight). It
-- is added to the next read's drop of that group, so charges add up to the drops
-- observed; one older than settlement.CARRY_TTL is dropped (use outside the gateway).
CREATE TABLE quota_carry (
    account_id  bigint NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    quota_group text NOT NULL,
    amount      double precision NOT NULL CHECK (amount >= 0),
    since       timestamptz NOT NULL,
    PRIMARY KEY (account_id, quota_group)
);

-- Per-model usage statistics of one user.
CREATE INDEX usage_log_user_model_idx ON usage_log (user_id, model_name, consumed_at);

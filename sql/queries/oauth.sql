-- OAuth onboarding: single-use states and the one-transaction store of an account.

-- name: create_oauth_state
INSERT INTO oauth_states (state, user_id, is_shared, expires_at)
VALUES (%(state)s, %(user_id)s, %(is_shared)s, now() + make_interval(secs => %(ttl)s))
RETURNING state, user_id, is_shared, expires_at

-- name: consume_oauth_state
-- Single use: DELETE ... RETURNING lets exactly one caller have the state, even
-- when two callbacks race. It is gone whether the attempt then succeeds or not.
-- owner_id NULL (the browser callback, or the admin) takes anyone's state; a
-- user's pasted URL only takes that user's own state, so another user's state
-- looks unknown to them and stays usable for its owner.
DELETE FROM oauth_states
WHERE state = %(state)s
  AND (%(owner_id)s::bigint IS NULL OR user_id = %(owner_id)s::bigint)
RETURNING user_id, is_shared, expires_at, expires_at > now() AS live

-- name: delete_expired_oauth_states
DELETE FROM oauth_states WHERE expires_at <= now()

-- name: account_owner_by_email
SELECT account_id, user_id FROM accounts WHERE email = %(email)s

-- name: lock_account_by_email
SELECT account_id, user_id FROM accounts WHERE email = %(email)s FOR UPDATE

-- name: insert_account
-- invalidates: account_candidates
-- A new account. A concurrent insert of the same e-mail makes this return no row.
INSERT INTO accounts (user_id, email, name, is_shared, project_id, tier,
                      refresh_token, access_token, access_token_expires_at, quota_fetched_at)
VALUES (%(user_id)s, %(email)s, %(name)s, %(is_shared)s, %(project_id)s, %(tier)s,
        %(refresh_token)s, %(access_token)s, %(expires_at)s,
        CASE WHEN %(quotas_read)s THEN now() END)
ON CONFLICT (email) DO NOTHING
RETURNING account_id

-- name: reauthorise_account
-- invalidates: account_candidates
-- Re-authorising an account its owner already has: new tokens, and a re-verified
-- account (VALIDATION_REQUIRED, PROTOCOL §13.9) is no longer parked.
UPDATE accounts
SET refresh_token = %(refresh_token)s,
    access_token = %(access_token)s,
    access_token_expires_at = %(expires_at)s,
    refresh_failures = 0,
    refresh_retry_at = NULL,
    blocked_until = NULL,
    validation_url = NULL,
    updated_at = now()
WHERE account_id = %(account_id)s
RETURNING account_id

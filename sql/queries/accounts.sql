-- The account endpoints (SPEC §3). Every query takes user_id: NULL (the admin)
-- reaches any account, a user only their own; another user's account matches
-- no row, so it answers 404 like one that does not exist.
-- Cooldowns come back as three parallel arrays (only the active ones), so the
-- times keep their type instead of being rendered by PostgreSQL's JSON.

-- name: get_account
SELECT a.account_id, a.user_id, a.email, a.name, a.is_shared, a.status, a.disabled_reason,
       a.project_id, a.tier, a.access_token_expires_at, a.last_used_at, a.created_at, a.updated_at,
       a.validation_url, a.kind,
       c.models AS cooldown_models, c.untils AS cooldown_untils, c.reasons AS cooldown_reasons
FROM accounts a
LEFT JOIN LATERAL account_cooldowns(a.account_id) c ON true
WHERE a.account_id = %(account_id)s
  AND (%(user_id)s::bigint IS NULL OR a.user_id = %(user_id)s::bigint)

-- name: list_accounts
SELECT a.account_id, a.user_id, a.email, a.name, a.is_shared, a.status, a.disabled_reason,
       a.project_id, a.tier, a.access_token_expires_at, a.last_used_at, a.created_at, a.updated_at,
       a.validation_url, a.kind,
       c.models AS cooldown_models, c.untils AS cooldown_untils, c.reasons AS cooldown_reasons
FROM accounts a
LEFT JOIN LATERAL account_cooldowns(a.account_id) c ON true
WHERE %(user_id)s::bigint IS NULL OR a.user_id = %(user_id)s::bigint
ORDER BY a.account_id

-- name: set_account_status
-- invalidates: account_candidates
-- Enabling clears the reason and the refresh back-off, so the account is tried again.
WITH changed AS (
    UPDATE accounts
    SET status = %(status)s::smallint,
        disabled_reason = CASE WHEN %(status)s::smallint = 1 THEN NULL ELSE %(reason)s END,
        refresh_failures = CASE WHEN %(status)s::smallint = 1 THEN 0 ELSE refresh_failures END,
        refresh_retry_at = CASE WHEN %(status)s::smallint = 1 THEN NULL ELSE refresh_retry_at END,
        updated_at = now()
    WHERE account_id = %(account_id)s
      AND (%(user_id)s::bigint IS NULL OR user_id = %(user_id)s::bigint)
    RETURNING *
)
SELECT a.account_id, a.user_id, a.email, a.name, a.is_shared, a.status, a.disabled_reason,
       a.project_id, a.tier, a.access_token_expires_at, a.last_used_at, a.created_at, a.updated_at,
       a.validation_url, a.kind,
       c.models AS cooldown_models, c.untils AS cooldown_untils, c.reasons AS cooldown_reasons
FROM changed a
LEFT JOIN LATERAL account_cooldowns(a.account_id) c ON true

-- name: set_account_name
-- invalidates: account_candidates
WITH changed AS (
    UPDATE accounts SET name = %(name)s, updated_at = now()
    WHERE account_id = %(account_id)s
      AND (%(user_id)s::bigint IS NULL OR user_id = %(user_id)s::bigint)
    RETURNING *
)
SELECT a.account_id, a.user_id, a.email, a.name, a.is_shared, a.status, a.disabled_reason,
       a.project_id, a.tier, a.access_token_expires_at, a.last_used_at, a.created_at, a.updated_at,
       a.validation_url, a.kind,
       c.models AS cooldown_models, c.untils AS cooldown_untils, c.reasons AS cooldown_reasons
FROM changed a
LEFT JOIN LATERAL account_cooldowns(a.account_id) c ON true

-- name: set_account_type
-- invalidates: account_candidates
WITH changed AS (
    UPDATE accounts SET is_shared = %(is_shared)s::smallint, updated_at = now()
    WHERE account_id = %(account_id)s
      AND (%(user_id)s::bigint IS NULL OR user_id = %(user_id)s::bigint)
    RETURNING *
)
SELECT a.account_id, a.user_id, a.email, a.name, a.is_shared, a.status, a.disabled_reason,
       a.project_id, a.tier, a.access_token_expires_at, a.last_used_at, a.created_at, a.updated_at,
       a.validation_url, a.kind,
       c.models AS cooldown_models, c.untils AS cooldown_untils, c.reasons AS cooldown_reasons
FROM changed a
LEFT JOIN LATERAL account_cooldowns(a.account_id) c ON true

-- name: delete_account
-- invalidates: account_candidates
-- Quotas and cooldowns go with it (ON DELETE CASCADE); usage rows stay, detached.
DELETE FROM accounts
WHERE account_id = %(account_id)s
  AND (%(user_id)s::bigint IS NULL OR user_id = %(user_id)s::bigint)
RETURNING account_id, user_id

-- name: insert_gemini_key_account
-- invalidates: account_candidates
-- A Gemini API key as an account (issue 15); the same key added twice returns no row.
INSERT INTO accounts (user_id, email, name, is_shared, kind, api_key, refresh_token, tier)
VALUES (%(user_id)s, %(fingerprint)s, %(name)s, %(is_shared)s, 'gemini_api', %(api_key)s, '', %(tier)s)
ON CONFLICT (email) DO NOTHING
RETURNING account_id

-- name: account_api_key
SELECT api_key FROM accounts WHERE account_id = %(account_id)s AND kind = 'gemini_api'

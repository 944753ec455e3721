-- Queries of the request path: choosing an account, its tokens, cooldowns.

-- name: account_candidates
-- Every enabled account the caller may use for one model, with what decides
-- whether it can serve now. One round trip; the ranking happens in Python.
SELECT a.account_id, a.user_id, a.is_shared, a.kind, a.api_key, a.project_id, a.access_token,
       a.access_token_expires_at, a.refresh_retry_at, a.last_used_at,
       q.quota, q.reset_time, coalesce(q.status, 1) AS quota_status,
       -- An account parked as a whole (VALIDATION_REQUIRED, PROTOCOL §13.9) waits like a cooldown.
       greatest(c.until, a.blocked_until) AS cooldown_until, a.validation_url,
       -- A pool without a row yet is full (pool_max, migration 0004, says how big).
       -- Recovery accrues continuously, so admission counts what has accrued by now.
       coalesce(pool_recovered(p.quota, p.max_quota, p.last_recovered_at), m.pool_max) AS pool_quota,
       -- 0: the caller shares nothing, so the pool is no source at all (not a wait).
       coalesce(p.max_quota, m.pool_max) AS pool_max,
       -- What the pool regains per second (migration 0011 holds the rate).
       pool_recovery_per_hour() * coalesce(p.max_quota, m.pool_max) / 3600.0 AS pool_refill_per_second,
       -- A window of the group's family bucket at 0 (PROTOCOL §13.6): the latest reset of
       -- the exhausted windows, NULL when one of them has none.
       w.exhausted IS NOT NULL AS window_exhausted, w.reset_time AS window_reset
FROM accounts a
CROSS JOIN (SELECT pool_max(%(user_id)s::bigint) AS pool_max) m
LEFT JOIN model_quotas q ON q.account_id = a.account_id AND q.model_name = %(model)s
LEFT JOIN cooldowns c ON c.account_id = a.account_id AND c.model_name = %(model)s AND c.until > now()
LEFT JOIN shared_pools p ON p.user_id = %(user_id)s AND p.quota_group = %(quota_group)s
LEFT JOIN LATERAL (SELECT true AS exhausted,
                          CASE WHEN bool_and(x.reset_time IS NOT NULL) THEN max(x.reset_time) END AS reset_time
                   FROM quota_windows x
                   WHERE x.account_id = a.account_id AND x.quota_group = %(quota_group)s AND x.quota <= 0
                   HAVING count(*) > 0) w ON true
WHERE a.status = 1
  AND (%(is_admin)s OR a.user_id = %(user_id)s OR a.is_shared = 1)

-- name: take_refresh_lease
-- One refresh of an account at a time across instances, with no lock held while Google
-- answers: the row is leased by a short statement (see migration 0009). No row: the
-- account is gone or disabled, or another instance holds the lease.
UPDATE accounts
SET refresh_lease_until = now() + make_interval(secs => %(lease)s)
WHERE account_id = %(account_id)s AND status = 1
  AND (refresh_lease_until IS NULL OR refresh_lease_until <= now())
RETURNING refresh_token, access_token, access_token_expires_at, refresh_failures

-- name: account_token_state
-- What a caller that could not take the lease waits on.
SELECT status, access_token, access_token_expires_at
FROM accounts WHERE account_id = %(account_id)s

-- name: release_refresh_lease
UPDATE accounts SET refresh_lease_until = NULL WHERE account_id = %(account_id)s

-- name: store_refreshed_tokens
-- invalidates: account_candidates
UPDATE accounts
SET access_token = %(access_token)s,
    access_token_expires_at = %(expires_at)s,
    refresh_token = coalesce(%(refresh_token)s, refresh_token),
    refresh_failures = 0,
    refresh_retry_at = NULL,
    refresh_lease_until = NULL,
    updated_at = now()
WHERE account_id = %(account_id)s

-- name: note_refresh_failure
-- invalidates: account_candidates
UPDATE accounts
SET refresh_failures = refresh_failures + 1,
    refresh_retry_at = now() + make_interval(secs => %(backoff)s),
    refresh_lease_until = NULL,
    updated_at = now()
WHERE account_id = %(account_id)s

-- name: disable_account
-- invalidates: account_candidates
-- An account stops serving for a reason of its own; the reason is shown to its owner.
UPDATE accounts
SET status = 0, disabled_reason = %(reason)s, refresh_lease_until = NULL, updated_at = now()
WHERE account_id = %(account_id)s AND status = 1
RETURNING account_id, user_id, is_shared

-- name: park_account_for_validation
-- invalidates: account_candidates
-- PROTOCOL §13.9 VALIDATION_REQUIRED: every model of the account waits until a time (not a
-- disable), and its owner is shown where to re-verify it.
UPDATE accounts
SET blocked_until = greatest(blocked_until, %(until)s),
    validation_url = coalesce(%(validation_url)s, validation_url),
    updated_at = now()
WHERE account_id = %(account_id)s

-- name: clear_account_validation
-- invalidates: account_candidates
-- The account served again: whatever verification it needed is done.
UPDATE accounts SET blocked_until = NULL, validation_url = NULL, updated_at = now()
WHERE account_id = %(account_id)s AND (blocked_until IS NOT NULL OR validation_url IS NOT NULL)

-- name: set_project
-- invalidates: account_candidates
UPDATE accounts SET project_id = %(project_id)s, updated_at = now()
WHERE account_id = %(account_id)s

-- name: set_cooldowns
-- invalidates: account_candidates
-- Park an account for some models (a quota group shares one bucket) until a time.
INSERT INTO cooldowns (account_id, model_name, until, reason)
SELECT %(account_id)s, m, %(until)s, %(reason)s FROM unnest(%(models)s::text[]) AS m
ON CONFLICT (account_id, model_name)
DO UPDATE SET until = greatest(cooldowns.until, EXCLUDED.until), reason = EXCLUDED.reason

-- name: accounts_due_for_refresh
-- OAuth accounts only: a Gemini API key has no token to refresh.
SELECT account_id FROM accounts
WHERE status = 1 AND kind = 'antigravity'
  AND (access_token_expires_at IS NULL OR access_token_expires_at < now() + make_interval(secs => %(ahead)s))
  AND (refresh_retry_at IS NULL OR refresh_retry_at < now())
  AND (refresh_lease_until IS NULL OR refresh_lease_until <= now())
ORDER BY access_token_expires_at NULLS FIRST
LIMIT %(limit)s

-- name: get_signatures
SELECT tool_call_id, family, signature, thinking FROM thought_signatures
WHERE tool_call_id = ANY(%(ids)s)

-- name: store_signatures
INSERT INTO thought_signatures (tool_call_id, family, signature, thinking)
SELECT * FROM unnest(%(ids)s::text[], %(families)s::text[], %(signatures)s::text[], %(thinking)s::text[])
ON CONFLICT (tool_call_id) DO NOTHING

-- name: delete_old_signatures
DELETE FROM thought_signatures WHERE created_at < now() - make_interval(secs => %(max_age)s)

-- name: create_key
INSERT INTO api_keys (user_id, name, key_hash, key_prefix, expires_at, rpm, tpm, max_concurrency,
                      allowed_models, monthly_token_budget, limits_locked)
SELECT user_id, %(name)s, %(key_hash)s, %(key_prefix)s, %(expires_at)s, %(rpm)s, %(tpm)s,
       %(max_concurrency)s, %(allowed_models)s, %(monthly_token_budget)s, %(limits_locked)s
FROM users WHERE user_id = %(user_id)s
RETURNING key_id, user_id, name, key_prefix, is_primary, status, created_at, updated_at, last_used_at,
          expires_at, rpm, tpm, max_concurrency, allowed_models, monthly_token_budget, limits_locked

-- name: list_keys
-- One user's keys, or (user NULL, for the admin) everyone's.
SELECT key_id, user_id, name, key_prefix, is_primary, status, created_at, updated_at, last_used_at,
       expires_at, rpm, tpm, max_concurrency, allowed_models, monthly_token_budget, limits_locked
FROM api_keys
WHERE %(user_id)s::bigint IS NULL OR user_id = %(user_id)s
ORDER BY user_id, key_id

-- name: get_key
SELECT key_id, user_id, name, key_prefix, is_primary, status, created_at, updated_at, last_used_at,
       expires_at, rpm, tpm, max_concurrency, allowed_models, monthly_token_budget, limits_locked
FROM api_keys
WHERE key_id = %(key_id)s

-- name: update_key
-- Each field is written only when its set_ flag says so (NULL clears a limit).
UPDATE api_keys SET
    name = CASE WHEN %(set_name)s THEN %(name)s ELSE name END,
    status = CASE WHEN %(set_status)s THEN %(status)s ELSE status END,
    expires_at = CASE WHEN %(set_expires_at)s THEN %(expires_at)s ELSE expires_at END,
    rpm = CASE WHEN %(set_rpm)s THEN %(rpm)s ELSE rpm END,
    tpm = CASE WHEN %(set_tpm)s THEN %(tpm)s ELSE tpm END,
    max_concurrency = CASE WHEN %(set_max_concurrency)s THEN %(max_concurrency)s ELSE max_concurrency END,
    allowed_models = CASE WHEN %(set_allowed_models)s THEN %(allowed_models)s ELSE allowed_models END,
    monthly_token_budget = CASE WHEN %(set_monthly_token_budget)s THEN %(monthly_token_budget)s
                                ELSE monthly_token_budget END,
    limits_locked = CASE WHEN %(set_limits_locked)s THEN %(limits_locked)s ELSE limits_locked END,
    updated_at = now()
WHERE key_id = %(key_id)s
RETURNING key_id, user_id, name, key_prefix, is_primary, status, created_at, updated_at, last_used_at,
          expires_at, rpm, tpm, max_concurrency, allowed_models, monthly_token_budget, limits_locked, key_hash

-- name: delete_key
DELETE FROM api_keys WHERE key_id = %(key_id)s RETURNING key_id, key_hash

-- name: key_month_usage
-- This calendar month's (UTC) requests and tokens of one key, from the usage log.
SELECT count(*) AS requests, coalesce(sum(total_tokens), 0)::bigint AS tokens
FROM usage_log
WHERE key_id = %(key_id)s
  AND consumed_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'

-- name: reconcile_keys
-- One instance's round with the others (gateway/admission.py), in one round trip: it
-- reports its requests and tokens per key and 10-second bucket since its last report and
-- its requests in flight, and reads the other instances' buckets since a bucket, what
-- they lately reported in flight (a silent instance stops counting), and the month's
-- tokens of the budgeted keys. The report is not in the read: the read skips this instance.
WITH activity AS (
    INSERT INTO key_activity (key_id, instance, bucket, requests, tokens)
    SELECT k, %(instance)s, b, r, t
    FROM unnest(%(activity_keys)s::bigint[], %(buckets)s::bigint[], %(requests)s::integer[],
                %(tokens)s::bigint[]) AS x(k, b, r, t)
    ON CONFLICT (key_id, instance, bucket)
    DO UPDATE SET requests = key_activity.requests + EXCLUDED.requests,
                  tokens = key_activity.tokens + EXCLUDED.tokens
), inflight AS (
    INSERT INTO key_inflight (key_id, instance, inflight, updated_at)
    SELECT k, %(instance)s, n, now() FROM unnest(%(capped_keys)s::bigint[], %(inflight)s::integer[]) AS x(k, n)
    ON CONFLICT (key_id, instance) DO UPDATE SET inflight = EXCLUDED.inflight, updated_at = now()
)
SELECT 'bucket' AS what, key_id, bucket, sum(requests)::bigint AS requests, sum(tokens)::bigint AS tokens,
       NULL::date AS month_start
FROM key_activity
WHERE key_id = ANY(%(key_ids)s::bigint[]) AND instance <> %(instance)s AND bucket >= %(since)s
GROUP BY key_id, bucket
UNION ALL
SELECT 'inflight', key_id, NULL, sum(inflight)::bigint, NULL, NULL
FROM key_inflight
WHERE key_id = ANY(%(key_ids)s::bigint[]) AND instance <> %(instance)s
  AND updated_at > now() - make_interval(secs => %(fresh)s)
GROUP BY key_id
UNION ALL
SELECT 'month', key_id, NULL, NULL, month_tokens, month_start
FROM api_keys WHERE key_id = ANY(%(budgeted_keys)s::bigint[])

-- name: delete_old_key_activity
DELETE FROM key_activity WHERE bucket < %(before)s

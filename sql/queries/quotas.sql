-- Quota reads, settlement, shared pools and the usage endpoints (SPEC §6, §9).
-- Pool functions (pool_recovered, pool_charge, pool_resize) are in migration 0004.

-- name: quota_account
-- The account a quota read is for, with what a token needs (and its tier: PROTOCOL §13.6).
SELECT account_id, user_id, is_shared, status, project_id, tier, access_token,
       access_token_expires_at, quota_fetched_at, kind
FROM accounts WHERE account_id = %(account_id)s

-- name: quota_lock_account
-- Serialises every settlement of one account (on any instance).
SELECT account_id, user_id, quota_fetched_at
FROM accounts WHERE account_id = %(account_id)s
FOR NO KEY UPDATE

-- name: quota_previous_reads
-- The stored read of each quota group of an account, before this read replaces it.
SELECT quota_group, min(quota) AS quota, min(reset_time) AS reset_time
FROM model_quotas WHERE account_id = %(account_id)s
GROUP BY quota_group

-- name: quota_carries
SELECT quota_group, amount, since FROM quota_carry WHERE account_id = %(account_id)s

-- name: quota_set_carry
INSERT INTO quota_carry (account_id, quota_group, amount, since)
VALUES (%(account_id)s, %(quota_group)s, %(amount)s, %(since)s)
ON CONFLICT (account_id, quota_group) DO UPDATE
SET amount = EXCLUDED.amount, since = EXCLUDED.since

-- name: quota_clear_carries
DELETE FROM quota_carry WHERE account_id = %(account_id)s AND quota_group = ANY(%(groups)s::text[])

-- name: quota_unsettled_usage
-- Usage rows one read settles: served on the account in the read's groups, finished by the read.
SELECT log_id, user_id, is_shared, quota_group, total_tokens
FROM usage_log
WHERE account_id = %(account_id)s AND quota_group = ANY(%(groups)s::text[])
  AND quota_consumed IS NULL AND consumed_at <= %(read_at)s
ORDER BY consumed_at, log_id
FOR UPDATE

-- name: quota_settle_usage
UPDATE usage_log u
SET quota_consumed = c.charge
FROM unnest(%(log_ids)s::bigint[], %(charges)s::float8[]) AS c(log_id, charge)
WHERE u.log_id = c.log_id AND u.quota_consumed IS NULL

-- name: quota_charge_pools
-- invalidates: account_candidates
-- One charge per (user, group); users in id order so concurrent settlements never deadlock.
SELECT c.user_id, c.quota_group, pool_charge(c.user_id, c.quota_group, c.amount) AS quota
FROM (SELECT * FROM unnest(%(user_ids)s::bigint[], %(groups)s::text[], %(amounts)s::float8[])
      AS x(user_id, quota_group, amount)
      ORDER BY user_id, quota_group) c

-- name: quota_mark_read
UPDATE accounts
SET quota_fetched_at = greatest(coalesce(quota_fetched_at, %(read_at)s), %(read_at)s)
WHERE account_id = %(account_id)s

-- name: quota_stale_accounts
-- Enabled accounts whose read is old, or whose finished requests no read has settled
-- (the instance that served them went away before its debounced read).
SELECT a.account_id
FROM accounts a
WHERE a.status = 1 AND a.kind = 'antigravity'  -- a Gemini API key reports no quota fractions
  AND (a.quota_fetched_at IS NULL
       OR a.quota_fetched_at < now() - make_interval(secs => %(stale_after)s)
       OR EXISTS (SELECT 1 FROM usage_log u
                  WHERE u.account_id = a.account_id AND u.quota_consumed IS NULL
                    AND u.consumed_at > a.quota_fetched_at
                    AND u.consumed_at < now() - make_interval(secs => %(settle_after)s)))
ORDER BY a.quota_fetched_at NULLS FIRST
LIMIT %(limit)s

-- name: store_quota_windows
-- invalidates: account_candidates
-- The windows of one summary read replace the account's stored ones (PROTOCOL §13.6).
WITH gone AS (
    DELETE FROM quota_windows
    WHERE account_id = %(account_id)s AND bucket_id <> ALL(%(bucket_ids)s::text[])
)
INSERT INTO quota_windows (account_id, bucket_id, bucket, window_name, quota_group, quota, reset_time,
                           last_fetched_at)
SELECT %(account_id)s, w.bucket_id, w.bucket, w.window_name, w.quota_group, w.quota, w.reset_time,
       %(read_at)s
FROM unnest(%(bucket_ids)s::text[], %(buckets)s::text[], %(windows)s::text[], %(groups)s::text[],
            %(quotas)s::float8[], %(resets)s::timestamptz[])
     AS w(bucket_id, bucket, window_name, quota_group, quota, reset_time)
ON CONFLICT (account_id, bucket_id) DO UPDATE
SET bucket = EXCLUDED.bucket,
    window_name = EXCLUDED.window_name,
    quota_group = EXCLUDED.quota_group,
    quota = EXCLUDED.quota,
    reset_time = EXCLUDED.reset_time,
    last_fetched_at = EXCLUDED.last_fetched_at

-- name: quota_windows_of_account
SELECT bucket_id, bucket, window_name, quota_group, quota, reset_time, last_fetched_at
FROM quota_windows WHERE account_id = %(account_id)s
ORDER BY bucket, window_name = 'weekly', window_name

-- name: quota_group_models
-- The models one account's stored read puts in a quota group: they share its bucket.
SELECT model_name FROM model_quotas
WHERE account_id = %(account_id)s AND quota_group = %(quota_group)s
ORDER BY model_name

-- name: quota_known_models
-- Every model some account's stored read reported, with its quota group.
SELECT DISTINCT quota_group, model_name FROM model_quotas ORDER BY quota_group, model_name

-- name: quota_rows_of_account
SELECT account_id, model_name, quota_group, quota, reset_time, status, last_fetched_at
FROM model_quotas WHERE account_id = %(account_id)s
ORDER BY quota_group, model_name

-- name: quota_set_model_status
-- invalidates: account_candidates
UPDATE model_quotas SET status = %(status)s
WHERE account_id = %(account_id)s AND model_name = %(model)s
RETURNING account_id, model_name, quota_group, quota, reset_time, status, last_fetched_at

-- name: quota_low
-- Enabled model quotas of enabled accounts below a threshold.
SELECT q.account_id, a.user_id, a.email, a.is_shared, q.model_name, q.quota_group, q.quota,
       q.reset_time, q.status, q.last_fetched_at
FROM model_quotas q
JOIN accounts a ON a.account_id = q.account_id
WHERE a.status = 1 AND q.status = 1 AND q.quota < %(threshold)s
ORDER BY q.quota, q.account_id, q.model_name

-- name: quota_shared_totals
-- Per model, over every enabled shared account's switched-on quota.
SELECT q.model_name, q.quota_group,
       sum(q.quota) AS total_quota,
       min(q.reset_time) FILTER (WHERE q.reset_time > now()) AS earliest_reset_time,
       count(*) FILTER (WHERE q.quota > 0 OR q.reset_time <= now()) AS available_accounts,
       count(*) AS total_accounts
FROM model_quotas q
JOIN accounts a ON a.account_id = q.account_id
WHERE a.status = 1 AND a.is_shared = 1 AND q.status = 1
GROUP BY q.model_name, q.quota_group
ORDER BY q.model_name

-- name: pool_rows_of_user
-- The user's pool in every group listed, with the recovery accrued so far: the groups
-- named (%(groups)s, in that order), then by name those some usable shared account
-- reports and those the user has a row for. A group without a row is a full pool,
-- the rule account_candidates reads too. A user with no group at all gets one row
-- whose group is NULL; no row means no such user.
WITH member AS (
    SELECT user_id, pool_max(user_id) AS max_quota FROM users WHERE user_id = %(user_id)s
), listed AS (
    SELECT g.quota_group, g.position
    FROM unnest(%(groups)s::text[]) WITH ORDINALITY AS g(quota_group, position)
    UNION ALL
    SELECT x.quota_group, NULL
    FROM (SELECT q.quota_group FROM model_quotas q JOIN accounts a ON a.account_id = q.account_id
          WHERE a.status = 1 AND a.is_shared = 1
          UNION
          SELECT s.quota_group FROM shared_pools s WHERE s.user_id = %(user_id)s) x
    WHERE x.quota_group <> ALL(%(groups)s::text[])
)
SELECT m.user_id, l.quota_group,
       coalesce(pool_recovered(p.quota, p.max_quota, p.last_recovered_at), m.max_quota) AS quota,
       coalesce(p.max_quota, m.max_quota) AS max_quota,
       p.last_recovered_at,
       -- What the pool regains an hour (migration 0011 holds the rate).
       pool_recovery_per_hour() * coalesce(p.max_quota, m.max_quota) AS recovery_per_hour
FROM member m
LEFT JOIN listed l ON true
LEFT JOIN shared_pools p ON p.user_id = m.user_id AND p.quota_group = l.quota_group
ORDER BY l.position NULLS LAST, l.quota_group COLLATE "C"

-- name: pool_recover
-- Recovery by elapsed time: idempotent, any number of runs on any number of instances.
UPDATE shared_pools
SET quota = pool_recovered(quota, max_quota, last_recovered_at),
    last_recovered_at = greatest(last_recovered_at, now())
WHERE quota < max_quota

-- name: usage_rows
-- One user's (or, for the admin without a user, everyone's) usage, newest first.
SELECT log_id, user_id, account_id, model_name, quota_group, is_shared, prompt_tokens,
       completion_tokens, reasoning_tokens, total_tokens, quota_consumed, status, latency_ms,
       consumed_at, surface, key_id
FROM usage_log
WHERE (%(user_id)s::bigint IS NULL OR user_id = %(user_id)s)
  AND (%(key_id)s::bigint IS NULL OR key_id = %(key_id)s)
  AND (%(start)s::timestamptz IS NULL OR consumed_at >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR consumed_at < %(end)s)
  -- A page after another: strictly older than its last row, in the listing's own order.
  AND (%(before_id)s::bigint IS NULL
       OR (consumed_at, log_id) < (SELECT b.consumed_at, b.log_id FROM usage_log b WHERE b.log_id = %(before_id)s))
ORDER BY consumed_at DESC, log_id DESC
LIMIT %(limit)s

-- name: usage_stats
SELECT count(*) AS total_requests,
       coalesce(sum(total_tokens), 0)::bigint AS total_tokens,
       coalesce(sum(quota_consumed), 0)::float8 AS total_quota_consumed,
       coalesce(avg(quota_consumed), 0)::float8 AS avg_quota_consumed,
       count(quota_consumed) AS settled_requests,
       max(consumed_at) AS last_used_at
FROM usage_log
WHERE (%(user_id)s::bigint IS NULL OR user_id = %(user_id)s)
  AND (%(key_id)s::bigint IS NULL OR key_id = %(key_id)s)
  AND model_name = ANY(%(models)s::text[])
  AND (%(start)s::timestamptz IS NULL OR consumed_at >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR consumed_at < %(end)s)

-- name: usage_daily
-- Per UTC day and model, what the usage log adds up to: exact at any volume, where a
-- page of rows is not (the console's chart and tiles read this).
SELECT (consumed_at AT TIME ZONE 'UTC')::date AS day,
       model_name,
       count(*) AS requests,
       count(*) FILTER (WHERE status <> 'ok') AS errors,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(reasoning_tokens), 0)::bigint AS reasoning_tokens,
       coalesce(sum(total_tokens), 0)::bigint AS total_tokens,
       coalesce(sum(quota_consumed), 0)::float8 AS quota_consumed,
       count(quota_consumed) AS settled_requests,
       coalesce(sum(latency_ms), 0)::bigint AS latency_ms_total
FROM usage_log
WHERE (%(user_id)s::bigint IS NULL OR user_id = %(user_id)s)
  AND (%(key_id)s::bigint IS NULL OR key_id = %(key_id)s)
  AND (%(start)s::timestamptz IS NULL OR consumed_at >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR consumed_at < %(end)s)
GROUP BY 1, 2
ORDER BY 1, 2

-- name: account_usage_since
SELECT count(*) AS requests, coalesce(sum(total_tokens), 0)::bigint AS tokens,
       coalesce(sum(quota_consumed), 0)::float8 AS quota_consumed
FROM usage_log
WHERE account_id = %(account_id)s AND consumed_at >= %(since)s

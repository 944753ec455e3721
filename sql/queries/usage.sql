-- name: insert_usage_batch
-- Many usage rows in one statement, and with them the accounts' last use and the keys'
-- last use and this month's (UTC) tokens, which the key limiter reads.
-- Rows whose user or account was deleted meanwhile are kept, detached.
WITH batch AS (
    SELECT * FROM unnest(
        %(request_ids)s::text[], %(user_ids)s::bigint[], %(account_ids)s::bigint[],
        %(models)s::text[], %(quota_groups)s::text[], %(shared)s::smallint[],
        %(prompt_tokens)s::integer[], %(completion_tokens)s::integer[],
        %(reasoning_tokens)s::integer[], %(total_tokens)s::integer[],
        %(statuses)s::text[], %(latencies)s::integer[], %(consumed_at)s::timestamptz[],
        %(surfaces)s::text[], %(key_ids)s::bigint[], %(quota_consumed)s::float8[]
    ) WITH ORDINALITY AS b(request_id, user_id, account_id, model_name, quota_group, is_shared,
           prompt_tokens, completion_tokens, reasoning_tokens, total_tokens,
           status, latency_ms, consumed_at, surface, key_id, quota_consumed, position)
), inserted AS (
    INSERT INTO usage_log (request_id, user_id, account_id, model_name, quota_group, is_shared,
                           prompt_tokens, completion_tokens, reasoning_tokens, total_tokens,
                           status, latency_ms, consumed_at, surface, key_id, quota_consumed)
    SELECT b.request_id, u.user_id, a.account_id, b.model_name, b.quota_group, b.is_shared,
           b.prompt_tokens, b.completion_tokens, b.reasoning_tokens, b.total_tokens,
           b.status, b.latency_ms, b.consumed_at, b.surface, b.key_id, b.quota_consumed
    FROM batch b
    LEFT JOIN users u ON u.user_id = b.user_id
    LEFT JOIN accounts a ON a.account_id = b.account_id
    -- log_id follows the batch's order whatever join the planner picks (a hash join
    -- on a table with statistics returns rows in its own order).
    ORDER BY b.position
    RETURNING account_id, consumed_at
), accounts_used AS (
    UPDATE accounts a
    SET last_used_at = greatest(a.last_used_at, used.last_at),
        request_count = a.request_count + used.n
    FROM (SELECT account_id, max(consumed_at) AS last_at, count(*) AS n
          FROM inserted WHERE account_id IS NOT NULL GROUP BY account_id) used
    WHERE a.account_id = used.account_id
    RETURNING 1
), this_month AS (
    SELECT (date_trunc('month', now() AT TIME ZONE 'UTC'))::date AS start
)
UPDATE api_keys k
SET last_used_at = greatest(k.last_used_at, used.last_at),
    month_tokens = CASE WHEN k.month_start = m.start THEN k.month_tokens ELSE 0 END + used.tokens,
    month_start = m.start
FROM (SELECT b.key_id, max(b.consumed_at) AS last_at,
             coalesce(sum(b.total_tokens) FILTER (
                 WHERE (date_trunc('month', b.consumed_at AT TIME ZONE 'UTC'))::date = m.start), 0) AS tokens
      FROM batch b, this_month m WHERE b.key_id IS NOT NULL GROUP BY b.key_id) used, this_month m
WHERE k.key_id = used.key_id

-- name: delete_old_usage
-- One batch of rows past the retention; the task repeats it, so no delete holds locks long.
DELETE FROM usage_log
WHERE log_id IN (
    SELECT log_id FROM usage_log
    WHERE consumed_at < now() - make_interval(secs => %(max_age)s)
    LIMIT %(batch)s
)

-- name: insert_usage_batch
-- Many usage rows in one statement, and the accounts' last use with them.
-- Rows whose user or account was deleted meanwhile are kept, detached.
WITH batch AS (
    SELECT * FROM unnest(
        %(request_ids)s::text[], %(user_ids)s::bigint[], %(account_ids)s::bigint[],
        %(models)s::text[], %(quota_groups)s::text[], %(shared)s::smallint[],
        %(prompt_tokens)s::integer[], %(completion_tokens)s::integer[],
        %(reasoning_tokens)s::integer[], %(total_tokens)s::integer[],
        %(statuses)s::text[], %(latencies)s::integer[], %(consumed_at)s::timestamptz[],
        %(surfaces)s::text[]
    ) WITH ORDINALITY AS b(request_id, user_id, account_id, model_name, quota_group, is_shared,
           prompt_tokens, completion_tokens, reasoning_tokens, total_tokens,
           status, latency_ms, consumed_at, surface, position)
), inserted AS (
    INSERT INTO usage_log (request_id, user_id, account_id, model_name, quota_group, is_shared,
                           prompt_tokens, completion_tokens, reasoning_tokens, total_tokens,
                           status, latency_ms, consumed_at, surface)
    SELECT b.request_id, u.user_id, a.account_id, b.model_name, b.quota_group, b.is_shared,
           b.prompt_tokens, b.completion_tokens, b.reasoning_tokens, b.total_tokens,
           b.status, b.latency_ms, b.consumed_at, b.surface
    FROM batch b
    LEFT JOIN users u ON u.user_id = b.user_id
    LEFT JOIN accounts a ON a.account_id = b.account_id
    -- log_id follows the batch's order whatever join the planner picks (a hash join
    -- on a table with statistics returns rows in its own order).
    ORDER BY b.position
    RETURNING account_id, consumed_at
)
UPDATE accounts a
SET last_used_at = greatest(a.last_used_at, used.last_at),
    request_count = a.request_count + used.n
FROM (SELECT account_id, max(consumed_at) AS last_at, count(*) AS n
      FROM inserted WHERE account_id IS NOT NULL GROUP BY account_id) used
WHERE a.account_id = used.account_id

-- name: delete_old_usage
-- One batch of rows past the retention; the task repeats it, so no delete holds locks long.
DELETE FROM usage_log
WHERE log_id IN (
    SELECT log_id FROM usage_log
    WHERE consumed_at < now() - make_interval(secs => %(max_age)s)
    LIMIT %(batch)s
)

-- name: metrics_snapshot
-- Gauges read at scrape time, so every instance reports the cluster's state.
SELECT
    (SELECT count(*) FROM accounts WHERE status = 1) AS accounts_enabled,
    (SELECT count(*) FROM accounts WHERE status = 0) AS accounts_disabled,
    (SELECT count(*) FROM accounts WHERE status = 1 AND is_shared = 1) AS accounts_shared,
    (SELECT count(*) FROM cooldowns WHERE until > now()) AS cooldowns_active,
    (SELECT count(*) FROM model_quotas WHERE quota <= 0 AND (reset_time IS NULL OR reset_time > now())) AS models_exhausted,
    (SELECT coalesce(sum(quota), 0) FROM shared_pools) AS pool_balance_total,
    (SELECT coalesce(sum(max_quota), 0) FROM shared_pools) AS pool_max_total,
    (SELECT count(*) FROM usage_log WHERE quota_consumed IS NULL) AS usage_unsettled

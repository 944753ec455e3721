-- Pool reservations (antigv/quotas/reservations.py): what admission reserves per request.

-- name: pool_cost_estimates
-- The mean charge of recent settled requests on shared accounts, per quota group. The
-- newest rows by key, so the scan stops after the sample however long usage is kept.
SELECT quota_group, avg(quota_consumed)::float8 AS per_request, count(*) AS requests
FROM (SELECT quota_group, quota_consumed FROM usage_log
      WHERE is_shared = 1 AND quota_consumed IS NOT NULL
      ORDER BY log_id DESC
      LIMIT %(sample)s) recent
GROUP BY quota_group

-- name: store_quota_read
-- invalidates: account_candidates
-- One quota read of an account, stamped with the moment it was taken.
-- A model switched off by hand stays off.
INSERT INTO model_quotas (account_id, model_name, quota_group, quota, reset_time, last_fetched_at)
SELECT %(account_id)s, m.model_name, m.quota_group, m.quota, m.reset_time, %(read_at)s
FROM unnest(%(models)s::text[], %(groups)s::text[], %(quotas)s::float8[], %(resets)s::timestamptz[])
     AS m(model_name, quota_group, quota, reset_time)
ON CONFLICT (account_id, model_name) DO UPDATE
SET quota_group = EXCLUDED.quota_group,
    quota = EXCLUDED.quota,
    reset_time = EXCLUDED.reset_time,
    last_fetched_at = EXCLUDED.last_fetched_at

-- name: enabled_account_ids
-- Every enabled account; the model catalogue reads those this process has not seen yet.
SELECT account_id, kind FROM accounts WHERE status = 1 ORDER BY account_id

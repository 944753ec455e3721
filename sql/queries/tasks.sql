-- name: try_task_lock
SELECT pg_try_advisory_lock(%(lock_id)s) AS locked

-- name: release_task_lock
SELECT pg_advisory_unlock(%(lock_id)s) AS released

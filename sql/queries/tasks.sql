-- name: take_task_lease
-- Taken when free or run out; under a race on one name, only one insert or update wins.
INSERT INTO task_leases (name, holder, expires_at)
VALUES (%(name)s, %(holder)s, now() + make_interval(secs => %(seconds)s))
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
    WHERE task_leases.expires_at < now()
RETURNING name

-- name: renew_task_lease
UPDATE task_leases SET expires_at = now() + make_interval(secs => %(seconds)s)
WHERE name = %(name)s AND holder = %(holder)s

-- name: release_task_lease
DELETE FROM task_leases WHERE name = %(name)s AND holder = %(holder)s

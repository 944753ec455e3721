-- name: create_user
INSERT INTO users (name, key_hash, key_prefix, prefer_shared)
VALUES (%(name)s, %(key_hash)s, %(key_prefix)s, %(prefer_shared)s)
RETURNING user_id, name, status, prefer_shared, key_prefix, created_at, updated_at

-- name: get_user
SELECT user_id, name, status, prefer_shared, key_prefix, created_at, updated_at
FROM users WHERE user_id = %(user_id)s

-- name: list_users
SELECT user_id, name, status, prefer_shared, key_prefix, created_at, updated_at
FROM users ORDER BY user_id LIMIT %(limit)s OFFSET %(offset)s

-- name: count_users
SELECT count(*) AS total FROM users

-- name: user_by_key_hash
SELECT user_id, name, status, prefer_shared FROM users WHERE key_hash = %(key_hash)s

-- name: set_user_key
UPDATE users SET key_hash = %(key_hash)s, key_prefix = %(key_prefix)s, updated_at = now()
WHERE user_id = %(user_id)s
RETURNING user_id, name, status, prefer_shared, key_prefix, created_at, updated_at

-- name: set_user_status
UPDATE users SET status = %(status)s, updated_at = now()
WHERE user_id = %(user_id)s
RETURNING user_id, name, status, prefer_shared, key_prefix, created_at, updated_at

-- name: set_user_preference
UPDATE users SET prefer_shared = %(prefer_shared)s, updated_at = now()
WHERE user_id = %(user_id)s
RETURNING user_id, name, status, prefer_shared, key_prefix, created_at, updated_at

-- name: delete_user
-- invalidates: account_candidates
DELETE FROM users WHERE user_id = %(user_id)s RETURNING user_id

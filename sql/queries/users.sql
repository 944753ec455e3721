-- name: create_user
-- A user and its first, primary key ("default"), in one statement.
WITH u AS (
    INSERT INTO users (name, prefer_shared) VALUES (%(name)s, %(prefer_shared)s)
    RETURNING user_id, name, status, prefer_shared, created_at, updated_at
), k AS (
    INSERT INTO api_keys (user_id, name, key_hash, key_prefix, is_primary)
    SELECT user_id, 'default', %(key_hash)s, %(key_prefix)s, true FROM u
    RETURNING key_prefix
)
SELECT u.user_id, u.name, u.status, u.prefer_shared, k.key_prefix, u.created_at, u.updated_at FROM u, k

-- name: get_user
SELECT u.user_id, u.name, u.status, u.prefer_shared, coalesce(k.key_prefix, '') AS key_prefix,
       u.created_at, u.updated_at
FROM users u LEFT JOIN api_keys k ON k.user_id = u.user_id AND k.is_primary
WHERE u.user_id = %(user_id)s

-- name: list_users
SELECT u.user_id, u.name, u.status, u.prefer_shared, coalesce(k.key_prefix, '') AS key_prefix,
       u.created_at, u.updated_at
FROM users u LEFT JOIN api_keys k ON k.user_id = u.user_id AND k.is_primary
ORDER BY u.user_id LIMIT %(limit)s OFFSET %(offset)s

-- name: count_users
SELECT count(*) AS total FROM users

-- name: key_by_hash
-- What a presented key resolves to: its user, and the key's own state and limits.
SELECT u.user_id, u.name, u.status, u.prefer_shared,
       k.key_id, k.status AS key_status, k.expires_at, k.rpm, k.tpm, k.max_concurrency,
       k.allowed_models, k.monthly_token_budget
FROM api_keys k JOIN users u ON u.user_id = k.user_id
WHERE k.key_hash = %(key_hash)s

-- name: set_user_key
-- regenerate-key: the primary key gets a new secret (keeping its name and limits); a user
-- whose primary key was deleted gets a new "default" one.
WITH k AS (
    INSERT INTO api_keys (user_id, name, key_hash, key_prefix, is_primary)
    SELECT user_id, 'default', %(key_hash)s, %(key_prefix)s, true FROM users WHERE user_id = %(user_id)s
    ON CONFLICT (user_id) WHERE is_primary
    DO UPDATE SET key_hash = EXCLUDED.key_hash, key_prefix = EXCLUDED.key_prefix, updated_at = now()
    RETURNING user_id, key_prefix
), u AS (
    UPDATE users SET updated_at = now() WHERE user_id IN (SELECT user_id FROM k)
    RETURNING user_id, name, status, prefer_shared, created_at, updated_at
)
SELECT u.user_id, u.name, u.status, u.prefer_shared, k.key_prefix, u.created_at, u.updated_at
FROM u JOIN k ON k.user_id = u.user_id

-- name: set_user_status
WITH u AS (
    UPDATE users SET status = %(status)s, updated_at = now() WHERE user_id = %(user_id)s
    RETURNING user_id, name, status, prefer_shared, created_at, updated_at
)
SELECT u.user_id, u.name, u.status, u.prefer_shared, coalesce(k.key_prefix, '') AS key_prefix,
       u.created_at, u.updated_at
FROM u LEFT JOIN api_keys k ON k.user_id = u.user_id AND k.is_primary

-- name: set_user_preference
WITH u AS (
    UPDATE users SET prefer_shared = %(prefer_shared)s, updated_at = now() WHERE user_id = %(user_id)s
    RETURNING user_id, name, status, prefer_shared, created_at, updated_at
)
SELECT u.user_id, u.name, u.status, u.prefer_shared, coalesce(k.key_prefix, '') AS key_prefix,
       u.created_at, u.updated_at
FROM u LEFT JOIN api_keys k ON k.user_id = u.user_id AND k.is_primary

-- name: delete_user
-- invalidates: account_candidates
DELETE FROM users WHERE user_id = %(user_id)s RETURNING user_id

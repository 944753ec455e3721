-- Issue 14: several API keys per user, each with its own limits. The key a user had
-- becomes that user's first key, named "default" (the primary one: regenerate-key
-- replaces it and the user's key_prefix shows it). Only SHA-256 digests are stored.
CREATE TABLE api_keys (
    key_id               bigserial PRIMARY KEY,
    user_id              bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    name                 text NOT NULL DEFAULT '',
    key_hash             bytea NOT NULL UNIQUE,
    key_prefix           text NOT NULL,
    is_primary           boolean NOT NULL DEFAULT false,
    status               smallint NOT NULL DEFAULT 1 CHECK (status IN (0, 1)),
    expires_at           timestamptz,
    -- Limits; NULL is none.
    rpm                  integer CHECK (rpm > 0),
    tpm                  bigint CHECK (tpm > 0),
    max_concurrency      integer CHECK (max_concurrency > 0),
    allowed_models       text[],
    monthly_token_budget bigint CHECK (monthly_token_budget > 0),
    -- Set by an admin: the owner may rename the key, not raise, clear or unlock its limits.
    limits_locked        smallint NOT NULL DEFAULT 0 CHECK (limits_locked IN (0, 1)),
    -- This calendar month's (UTC) tokens, kept by the usage writer, read by the limiter.
    month_start          date,
    month_tokens         bigint NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    last_used_at         timestamptz
);
CREATE UNIQUE INDEX api_keys_one_primary_idx ON api_keys (user_id) WHERE is_primary;
CREATE INDEX api_keys_user_idx ON api_keys (user_id, key_id);

INSERT INTO api_keys (user_id, name, key_hash, key_prefix, is_primary, created_at, updated_at)
SELECT user_id, 'default', key_hash, key_prefix, true, created_at, updated_at FROM users;

ALTER TABLE users DROP COLUMN key_hash, DROP COLUMN key_prefix;

ALTER TABLE usage_log ADD COLUMN key_id bigint;
CREATE INDEX usage_log_key_idx ON usage_log (key_id, consumed_at) WHERE key_id IS NOT NULL;

-- Per-key activity of each instance in 10-second buckets, so that every instance counts
-- the others' requests and tokens of the last minute (reconciled about once a second).
CREATE UNLOGGED TABLE key_activity (
    key_id   bigint NOT NULL,
    instance text NOT NULL,
    bucket   bigint NOT NULL,  -- floor(epoch seconds / 10)
    requests integer NOT NULL DEFAULT 0,
    tokens   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, instance, bucket)
);
CREATE INDEX key_activity_bucket_idx ON key_activity (bucket);

-- Requests in flight per key and instance, as each instance last reported them.
CREATE UNLOGGED TABLE key_inflight (
    key_id     bigint NOT NULL,
    instance   text NOT NULL,
    inflight   integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, instance)
);

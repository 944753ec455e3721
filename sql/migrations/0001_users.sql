-- Users and their API keys. Only a SHA-256 digest of each key is stored.
CREATE TABLE users (
    user_id       bigserial PRIMARY KEY,
    name          text NOT NULL DEFAULT '',
    key_hash      bytea NOT NULL UNIQUE,
    key_prefix    text NOT NULL,
    status        smallint NOT NULL DEFAULT 1 CHECK (status IN (0, 1)),
    prefer_shared smallint NOT NULL DEFAULT 0 CHECK (prefer_shared IN (0, 1)),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

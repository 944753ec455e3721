-- Google accounts, their per-model quotas and cooldowns, and OAuth states.

CREATE TABLE accounts (
    account_id              bigserial PRIMARY KEY,
    user_id                 bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    email                   text NOT NULL UNIQUE,
    name                    text NOT NULL DEFAULT '',
    is_shared               smallint NOT NULL DEFAULT 0 CHECK (is_shared IN (0, 1)),
    status                  smallint NOT NULL DEFAULT 1 CHECK (status IN (0, 1)),
    disabled_reason         text,
    project_id              text NOT NULL DEFAULT '',
    tier                    text NOT NULL DEFAULT '',
    -- Tokens are AES-GCM sealed when security.token_encryption_key is set.
    refresh_token           text NOT NULL,
    access_token            text NOT NULL DEFAULT '',
    access_token_expires_at timestamptz,
    -- Transient refresh failures back off instead of disabling the account.
    refresh_failures        integer NOT NULL DEFAULT 0,
    refresh_retry_at        timestamptz,
    last_used_at            timestamptz,
    request_count           bigint NOT NULL DEFAULT 0,
    quota_fetched_at        timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_user_idx ON accounts (user_id);
CREATE INDEX accounts_shared_idx ON accounts (is_shared) WHERE status = 1;

CREATE TABLE model_quotas (
    account_id      bigint NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    model_name      text NOT NULL,
    quota_group     text NOT NULL,
    quota           double precision NOT NULL CHECK (quota >= 0 AND quota <= 1),
    reset_time      timestamptz,
    -- 0 = switched off by hand; stays off until switched on.
    status          smallint NOT NULL DEFAULT 1 CHECK (status IN (0, 1)),
    last_fetched_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, model_name)
);

-- An account+model parked after a 429 until "until".
CREATE TABLE cooldowns (
    account_id bigint NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    model_name text NOT NULL,
    until      timestamptz NOT NULL,
    reason     text NOT NULL,
    PRIMARY KEY (account_id, model_name)
);

CREATE TABLE oauth_states (
    state      text PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    is_shared  smallint NOT NULL CHECK (is_shared IN (0, 1)),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Thought signatures of tool calls, so a follow-up turn can replay them on
-- any instance even when the client dropped them.
CREATE TABLE thought_signatures (
    tool_call_id text PRIMARY KEY,
    family       text NOT NULL,
    signature    text NOT NULL,
    thinking     text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX thought_signatures_age_idx ON thought_signatures (created_at);

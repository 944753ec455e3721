-- Shared quota pools and the usage log.

CREATE TABLE shared_pools (
    user_id           bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    quota_group       text NOT NULL,
    quota             double precision NOT NULL CHECK (quota >= 0),
    max_quota         double precision NOT NULL CHECK (max_quota >= 0),
    last_recovered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, quota_group)
);

-- One row per finished request. Kept when the user or account is deleted.
CREATE TABLE usage_log (
    log_id            bigserial PRIMARY KEY,
    request_id        text NOT NULL,
    user_id           bigint REFERENCES users (user_id) ON DELETE SET NULL,
    account_id        bigint REFERENCES accounts (account_id) ON DELETE SET NULL,
    model_name        text NOT NULL,
    quota_group       text NOT NULL,
    is_shared         smallint NOT NULL CHECK (is_shared IN (0, 1)),
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    reasoning_tokens  integer NOT NULL DEFAULT 0,
    total_tokens      integer NOT NULL DEFAULT 0,
    -- NULL until a quota read of the account settles it.
    quota_consumed    double precision,
    status            text NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
    latency_ms        integer NOT NULL DEFAULT 0,
    consumed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_log_user_idx ON usage_log (user_id, consumed_at DESC);
CREATE INDEX usage_log_unsettled_idx ON usage_log (account_id, quota_group) WHERE quota_consumed IS NULL;

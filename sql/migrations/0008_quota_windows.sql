-- The 5-hour and weekly windows of each account's family buckets (PROTOCOL §13.6),
-- as retrieveUserQuotaSummary reported them at the last read that reached it. An
-- account serves a model only while every window of the model's quota group is
-- above 0; it comes back at the latest reset of its exhausted windows.
CREATE TABLE quota_windows (
    account_id      bigint NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    bucket_id       text NOT NULL,              -- "gemini-weekly"
    bucket          text NOT NULL,              -- "gemini": the family the window belongs to
    window_name     text NOT NULL,              -- "5h", "weekly" ("window" is a reserved word)
    -- The quota group the window limits (quotas.buckets); NULL: a bucket no group maps to.
    quota_group     text,
    quota           double precision NOT NULL CHECK (quota >= 0 AND quota <= 1),
    reset_time      timestamptz,
    last_fetched_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, bucket_id)
);

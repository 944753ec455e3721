-- Cluster-once background tasks take a lease row instead of a session-level advisory
-- lock: the lock held one pooled connection for the whole run, across every call the
-- task made to Google or the upstream (issue 11 item 16). A lease is taken and renewed
-- by short statements; one whose holder died runs out by itself.
CREATE TABLE task_leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

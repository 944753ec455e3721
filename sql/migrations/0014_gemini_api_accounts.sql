-- Issue 15: a second kind of account, a Gemini API key (generativelanguage.googleapis.com),
-- beside the Antigravity OAuth accounts. Its key is sealed like OAuth tokens; its "email"
-- is a fingerprint of the key, so one key is one account.
ALTER TABLE accounts
    ADD COLUMN kind text NOT NULL DEFAULT 'antigravity' CHECK (kind IN ('antigravity', 'gemini_api')),
    ADD COLUMN api_key text NOT NULL DEFAULT '';

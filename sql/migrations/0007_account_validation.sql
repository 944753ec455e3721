-- PROTOCOL §13.9: VALIDATION_REQUIRED asks the account's owner to re-verify it in a
-- browser. The whole account is parked for a while (all models; a timed block, not a
-- disable) and the owner is shown where to go. Both are cleared once the account
-- serves again or is re-authorised.
ALTER TABLE accounts
    ADD COLUMN blocked_until  timestamptz,
    ADD COLUMN validation_url text;

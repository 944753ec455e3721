-- Token refresh without a connection held across the call to Google (issue 11 item 16).
-- An instance that refreshes an account's token first takes a short lease on the row
-- (a conditional UPDATE), calls Google with no transaction open, and clears the lease
-- when it stores the outcome. Another instance that finds the lease taken waits for
-- the new token instead of calling Google too; a lease whose holder died runs out.
ALTER TABLE accounts ADD COLUMN refresh_lease_until timestamptz;

-- The shared pool's recovery rate in one place (issue 12): pool_recovered and the routing
-- query (which tells a caller how long until the pool admits again) read it from here.
CREATE FUNCTION pool_recovery_per_hour() RETURNS double precision
LANGUAGE sql IMMUTABLE
AS $$ SELECT 0.2::float8 $$;

CREATE OR REPLACE FUNCTION pool_recovered(quota double precision, max_quota double precision, since timestamptz)
RETURNS double precision
LANGUAGE sql STABLE
AS $$
    SELECT least(max_quota,
                 quota + pool_recovery_per_hour() * max_quota
                         * greatest(0::float8, extract(epoch FROM now() - since)::float8) / 3600.0)
$$;

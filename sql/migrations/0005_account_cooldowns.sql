-- The active cooldowns of one account as parallel arrays ordered by model, so the
-- account queries share one definition instead of repeating it.
CREATE FUNCTION account_cooldowns(
    p_account bigint, OUT models text[], OUT untils timestamptz[], OUT reasons text[]
)
LANGUAGE sql STABLE AS $$
    SELECT array_agg(model_name ORDER BY model_name),
           array_agg(until ORDER BY model_name),
           array_agg(reason ORDER BY model_name)
    FROM cooldowns WHERE account_id = p_account AND until > now()
$$;

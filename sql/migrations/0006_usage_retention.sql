-- Retention deletes usage rows by age. The table is appended in time order, so a
-- BRIN index finds old rows at a fraction of a B-tree's size and insert cost.
CREATE INDEX usage_log_consumed_at_brin ON usage_log USING brin (consumed_at);

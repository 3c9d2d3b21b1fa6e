-- qgw_share_out: a window's room for fast admissions, shared out over its 16 shards.
-- The caller holds every shard of the window. Shares out evenly what fast admissions may
-- still take: up to the limit, and short of the next threshold above p_alerted, so that
-- only a slow (locked) admission can cross one.
CREATE OR REPLACE FUNCTION qgw_share_out(p_budget bigint, p_starts timestamptz, p_limit bigint,
                              p_alerted int, p_thresholds int[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    used bigint;
    shards int;
    room bigint := p_limit;
    fence bigint;
BEGIN
    SELECT sum(spent_micros + reserved_micros), count(*) INTO used, shards
      FROM budget_shards WHERE budget_id = p_budget AND starts_at = p_starts;
    IF p_limit > 0 THEN
        -- The least total at which an unannounced threshold would be crossed.
        SELECT min((pct::bigint * p_limit + 99) / 100) INTO fence
          FROM unnest(p_thresholds) AS pct WHERE pct > p_alerted;
        IF fence IS NOT NULL THEN
            room := least(room, fence - 1);
        END IF;
    END IF;
    room := greatest(room - used, 0);
    UPDATE budget_shards
       SET allowance_micros = spent_micros + reserved_micros + room / shards
                              + CASE WHEN shard < room % shards THEN 1 ELSE 0 END,
           limit_micros = p_limit
     WHERE budget_id = p_budget AND starts_at = p_starts;
END
$$;

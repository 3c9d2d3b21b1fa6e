-- qgw_reserve_and_insert_task: the exclusive path of admission, for a task the fast path
-- (qgw_reserve_and_insert_tasks) refused with QBX01. Inserts the task and reserves its
-- price under every budget that covers it (qgw_covering_budgets), deciding on each
-- window's exact total, in one statement, or refuses:
--   QB429  the team's max_concurrent_tasks (qgw_check_team_cap);
--   QB402  a budget (DETAIL: the budget's JSON standing).
-- Nothing is stored when it refuses.
--
-- It locks every shard of each covering window (budget id order, then shard order, after
-- the team row: the order of every admission, so no deadlocks), creates a window's period
-- and shards at its first admission, records the alert threshold it crossed, exactly
-- once, and shares the window's room out again over its shards (qgw_share_out), which is
-- what lets the fast path go on without crossing one.
--
-- `crossings` lists the thresholds crossed; the caller writes their alert webhooks in the
-- same transaction (budgets/alerts.py), so money strings are built in one place.
CREATE OR REPLACE FUNCTION qgw_reserve_and_insert_task(
    p_id text, p_team uuid, p_key uuid, p_model text, p_action text,
    p_request jsonb, p_cost bigint, p_priority smallint, p_callback_url text,
    p_callback_events text[], p_now timestamptz, p_tz text, p_thresholds int[],
    OUT task tasks, OUT crossings jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    per budget_periods;
    starts timestamptz;
    pick smallint := floor(random() * 16);
    spent bigint;
    reserved bigint;
    level int;
    pct int;
    reserved_in bigint[] := '{}';
    reserved_from timestamptz[] := '{}';
BEGIN
    crossings := '[]'::jsonb;
    PERFORM qgw_check_team_cap(p_team);
    INSERT INTO tasks (id, team_id, api_key_id, model, action, request, cost_micros,
                       priority, callback_url, callback_events)
    VALUES (p_id, p_team, p_key, p_model, p_action, p_request, p_cost, p_priority,
            p_callback_url, p_callback_events)
    RETURNING * INTO task;

    FOR b IN
        SELECT id, scope, period, limit_micros FROM qgw_covering_budgets(p_team, p_key)
         ORDER BY id
    LOOP
        starts := qgw_period_start(b.period, p_now, p_tz);
        -- The window's first admission creates its period and shards.
        IF NOT EXISTS (SELECT 1 FROM budget_shards
                        WHERE budget_id = b.id AND starts_at = starts AND shard = 0) THEN
            INSERT INTO budget_periods (budget_id, starts_at, ends_at)
            VALUES (b.id, starts, qgw_period_end(b.period, starts, p_tz))
            ON CONFLICT DO NOTHING;
            INSERT INTO budget_shards (budget_id, starts_at, shard)
            SELECT b.id, starts, s FROM generate_series(0, 15) s
            ON CONFLICT DO NOTHING;
        END IF;
        PERFORM 1 FROM budget_shards WHERE budget_id = b.id AND starts_at = starts
         ORDER BY shard FOR NO KEY UPDATE;
        SELECT sum(s.spent_micros), sum(s.reserved_micros) INTO spent, reserved
          FROM budget_shards s WHERE s.budget_id = b.id AND s.starts_at = starts;
        SELECT * INTO per FROM budget_periods
         WHERE budget_id = b.id AND starts_at = starts;
        IF spent + reserved + p_cost > b.limit_micros THEN
            RAISE EXCEPTION 'budget exceeded' USING ERRCODE = 'QB402',
                DETAIL = jsonb_build_object(
                    'budget_id', b.id, 'scope', b.scope, 'window', b.period,
                    'limit_micros', b.limit_micros, 'spent_micros', spent,
                    'reserved_micros', reserved, 'cost_micros', p_cost,
                    'resets_at', per.ends_at)::text;
        END IF;
        UPDATE budget_shards SET reserved_micros = reserved_micros + p_cost
         WHERE budget_id = b.id AND starts_at = starts AND shard = pick;
        reserved := reserved + p_cost;

        level := 0;
        IF b.limit_micros > 0 THEN
            FOREACH pct IN ARRAY p_thresholds LOOP
                IF (spent + reserved) * 100 >= pct::bigint * b.limit_micros THEN
                    level := greatest(level, pct);
                END IF;
            END LOOP;
        END IF;
        IF level > per.alerted_percent THEN
            UPDATE budget_periods SET alerted_percent = level
             WHERE budget_id = b.id AND starts_at = starts;
            crossings := crossings || jsonb_build_object(
                'budget_id', b.id, 'scope', b.scope, 'window', b.period,
                'percent', level, 'limit_micros', b.limit_micros,
                'spent_micros', spent, 'reserved_micros', reserved,
                'resets_at', per.ends_at);
        END IF;
        PERFORM qgw_share_out(b.id, starts, b.limit_micros,
                              greatest(level, per.alerted_percent), p_thresholds);
        reserved_in := reserved_in || b.id;
        reserved_from := reserved_from || starts;
    END LOOP;
    IF cardinality(reserved_in) > 0 THEN  -- the ledger, in one statement
        INSERT INTO budget_ledger (budget_id, starts_at, shard, task_id, model, kind,
                                   amount_micros)
        SELECT r.id, r.starts_at, pick, p_id, p_model, 'reserve', p_cost
          FROM unnest(reserved_in, reserved_from) AS r(id, starts_at);
    END IF;
END
$$;

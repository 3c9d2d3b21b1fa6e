-- qgw_reserve_and_insert_tasks: admit several tasks at once, all or none, by the fast path
-- of qgw_reserve_and_insert_task (reserve_and_insert_task.sql): one random shard per
-- window, taking the batch's summed price under each budget with one conditional UPDATE,
-- then one INSERT of the tasks and one of their ledger rows. It refuses the whole batch,
-- storing nothing, where one task could not be admitted this way:
--   QBX01  a picked shard had no room for the batch's sum;
--   QBX02  a task's team has a max_concurrent_tasks (its admissions go one at a time);
-- and with any other error (a key deleted meanwhile, say). The caller then admits each
-- task on its own, which gives each its own answer.
--
-- Why: an admission's Postgres CPU is mostly per statement and per commit, not per row
-- (bench/cpu.py, perf: executor start-up, constraint set-up, the commit's WAL flush), so
-- admissions that arrive together share them (tasks/admission_batch.py says how they
-- are gathered). The sum within a shard's allowance keeps every promise of one admission
-- within it: no overshoot of the limit or of the next alert threshold, so no alert is
-- crossed here. Shards are locked in (budget id, window start) order, as every other
-- admission locks them (one window each), so no two admissions wait on each other.
CREATE OR REPLACE FUNCTION qgw_reserve_and_insert_tasks(
    p_ids text[], p_teams uuid[], p_keys uuid[], p_models text[], p_actions text[],
    p_requests jsonb[], p_costs bigint[], p_priorities smallint[], p_callback_urls text[],
    p_callback_events text[], p_nows timestamptz[], p_tz text)
RETURNS SETOF tasks
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    starts timestamptz;
    pick smallint := floor(random() * 16);
    ledger_budgets bigint[] := '{}';
    ledger_starts timestamptz[] := '{}';
    ledger_tasks int[] := '{}';
BEGIN
    IF EXISTS (SELECT 1 FROM teams
                WHERE id = ANY (p_teams) AND max_concurrent_tasks IS NOT NULL) THEN
        RAISE EXCEPTION 'a team in the batch has a concurrency cap' USING ERRCODE = 'QBX02';
    END IF;
    -- Each task in the window its own `now` falls in: a batch may span a window's end.
    FOR b IN
        SELECT u.id, w.starts, u.limit_micros, sum(t.cost)::bigint AS total,
               array_agg(t.n) AS members
        FROM budgets u
        JOIN unnest(p_teams, p_keys, p_costs, p_nows) WITH ORDINALITY
             AS t(team, key, cost, now, n)
          ON u.scope = 'company'
             OR (u.scope = 'team' AND u.team_id = t.team)
             OR (u.scope = 'key' AND u.api_key_id = t.key)
        CROSS JOIN LATERAL (SELECT qgw_period_start(u.period, t.now, p_tz) AS starts) w
        WHERE u.limit_micros IS NOT NULL
        GROUP BY u.id, w.starts
        ORDER BY u.id, w.starts
    LOOP
        starts := b.starts;
        UPDATE budget_shards SET reserved_micros = reserved_micros + b.total
         WHERE budget_id = b.id AND starts_at = starts AND shard = pick
           AND limit_micros = b.limit_micros
           AND spent_micros + reserved_micros + b.total <= allowance_micros;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'budget shard has no room' USING ERRCODE = 'QBX01';
        END IF;
        ledger_budgets := ledger_budgets || array_fill(b.id, ARRAY[cardinality(b.members)]);
        ledger_starts := ledger_starts || array_fill(starts, ARRAY[cardinality(b.members)]);
        ledger_tasks := ledger_tasks || b.members::int[];
    END LOOP;
    INSERT INTO budget_ledger (budget_id, starts_at, shard, task_id, model, kind,
                               amount_micros)
    SELECT l.budget_id, l.starts_at, pick, p_ids[l.n], p_models[l.n], 'reserve', p_costs[l.n]
      FROM unnest(ledger_budgets, ledger_starts, ledger_tasks) AS l(budget_id, starts_at, n);
    RETURN QUERY
    INSERT INTO tasks (id, team_id, api_key_id, model, action, request, cost_micros,
                       priority, callback_url, callback_events)
    SELECT t.id, t.team, t.key, t.model, t.action, t.request, t.cost, t.priority, t.url,
           string_to_array(t.events, ',')  -- each task's events, comma-separated
      FROM unnest(p_ids, p_teams, p_keys, p_models, p_actions, p_requests, p_costs,
                  p_priorities, p_callback_urls, p_callback_events)
           AS t(id, team, key, model, action, request, cost, priority, url, events)
    RETURNING *;
END
$$;

-- qgw_reserve_and_insert_tasks: the fast path of admission, the only one. Admits one task
-- or several at once, all or none: each task's price is reserved under every budget that
-- covers it (qgw_covering_budgets), in one random shard per window, with one conditional
-- UPDATE per window taking the batch's summed price there; then one INSERT of their
-- ledger rows and one of the tasks. A lone request is a batch of one.
-- It refuses, storing nothing:
--   QBX01  a picked shard had no room for the batch's sum (a window's first admission,
--          near a limit or an alert level, a changed limit): a lone task goes the
--          exclusive way then (qgw_reserve_and_insert_task), a batch task by task;
--   QBX02  several tasks, and a team among them has a max_concurrent_tasks: its
--          admissions go one at a time, each a batch of its own;
--   QB429  a lone task whose team is at its max_concurrent_tasks (qgw_check_team_cap).
-- Any other error is not a refusal: the caller counts it and answers it as an error.
--
-- A window's money lives in 16 shard rows, each with an allowance (qgw_share_out). The
-- allowances of a window add up to at most what may still be admitted without crossing
-- the limit or the next alert threshold not yet announced, so a sum within one shard's
-- allowance keeps every promise: no overshoot of the limit, no alert crossed here (only
-- the exclusive path crosses one, and writes it). Concurrent admissions mostly touch
-- different shards. Why fail with QBX01 instead of going on to lock whole windows in this
-- statement: an UPDATE that waited for a row and then found it no longer matching keeps
-- that row locked, and two such admissions would deadlock.
--
-- Why batches: an admission's Postgres CPU is mostly per statement and per commit, not per
-- row (bench/cpu.py, perf: executor start-up, constraint set-up, the commit's WAL flush),
-- so admissions that arrive together share them (tasks/admission_batch.py gathers them).
-- Locks are taken in one order by every admission: the team row (capped teams only),
-- then shards in (budget id, window start) order, so no two admissions wait on each other.
CREATE OR REPLACE FUNCTION qgw_reserve_and_insert_tasks(
    p_ids text[], p_teams uuid[], p_keys uuid[], p_models text[], p_actions text[],
    p_requests jsonb[], p_costs bigint[], p_priorities smallint[], p_callback_urls text[],
    p_callback_events text[], p_nows timestamptz[], p_tz text)
RETURNS SETOF tasks
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    pick smallint := floor(random() * 16);
    ledger_budgets bigint[] := '{}';
    ledger_starts timestamptz[] := '{}';
    ledger_tasks int[] := '{}';
BEGIN
    IF EXISTS (SELECT 1 FROM teams
                WHERE id = ANY (p_teams) AND max_concurrent_tasks IS NOT NULL) THEN
        IF cardinality(p_ids) > 1 THEN
            RAISE EXCEPTION 'a team in the batch has a concurrency cap' USING ERRCODE = 'QBX02';
        END IF;
        PERFORM qgw_check_team_cap(p_teams[1]);
    END IF;
    -- Each task in the window its own `now` falls in: a batch may span a window's end.
    FOR b IN
        SELECT u.id, w.starts, u.limit_micros, sum(t.cost)::bigint AS total,
               array_agg(t.n) AS members
        FROM unnest(p_teams, p_keys, p_costs, p_nows) WITH ORDINALITY
             AS t(team, key, cost, now, n)
        CROSS JOIN LATERAL qgw_covering_budgets(t.team, t.key) u
        CROSS JOIN LATERAL (SELECT qgw_period_start(u.period, t.now, p_tz) AS starts) w
        GROUP BY u.id, w.starts, u.limit_micros
        ORDER BY u.id, w.starts
    LOOP
        -- The picked shard's allowance, made for this very limit.
        UPDATE budget_shards SET reserved_micros = reserved_micros + b.total
         WHERE budget_id = b.id AND starts_at = b.starts AND shard = pick
           AND limit_micros = b.limit_micros
           AND spent_micros + reserved_micros + b.total <= allowance_micros;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'budget shard has no room' USING ERRCODE = 'QBX01';
        END IF;
        ledger_budgets := ledger_budgets || array_fill(b.id, ARRAY[cardinality(b.members)]);
        ledger_starts := ledger_starts || array_fill(b.starts, ARRAY[cardinality(b.members)]);
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

"""Budgets, their per-window periods, the append-only ledger, and admission in one statement.

Revision ID: 0003_budgets
Revises: 0002_task_notify
Create Date: 2026-11-24

Admission (`qgw_admit_tasks`, a batch of one or more tasks) and settlement
(`qgw_settle_task`) are SQL functions so that each runs as one statement: the row locks
they take on capped teams and on budget windows are held for server time and the commit,
never across a network round trip, and they are always taken in the same order (capped
team rows by id, then budget windows by budget id), so concurrent submissions and
settlements cannot deadlock. Admissions under one budget window serialise on its row
through their commit; batching them (group commit, service/budgets/admission.py) makes
that one commit per batch instead of one per task.
"""

from service.db import run_script

revision = "0003_budgets"
down_revision = "0002_task_notify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        ALTER TABLE teams ADD COLUMN alert_url text;
        -- A team's unfinished tasks, counted under its row lock when it has a cap.
        CREATE INDEX tasks_team_unfinished ON tasks (team_id) WHERE dispatch_state <> 'done';
        ALTER TABLE api_keys ADD COLUMN rpm_limit integer CHECK (rpm_limit > 0);
        -- The submissions-per-second token bucket shared by every dispatcher.
        ALTER TABLE upstream_state ADD COLUMN submit_tokens double precision,
                                   ADD COLUMN tokens_at timestamptz;

        -- One row per (scope, subject, period). limit_micros NULL: removed by the admin,
        -- kept so that reservations made under it still settle against their own rows.
        CREATE TABLE budgets (
            id bigserial PRIMARY KEY,
            scope text NOT NULL CHECK (scope IN ('company', 'team', 'key')),
            team_id uuid REFERENCES teams (id) ON DELETE CASCADE,
            api_key_id uuid REFERENCES api_keys (id) ON DELETE CASCADE,
            period text NOT NULL CHECK (period IN ('day', 'week', 'month', 'total')),
            limit_micros bigint CHECK (limit_micros >= 0),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CHECK ((scope = 'company') = (team_id IS NULL)),
            CHECK ((scope = 'key') = (api_key_id IS NOT NULL))
        );
        CREATE UNIQUE INDEX budgets_subject ON budgets (
            scope,
            coalesce(team_id, '00000000-0000-0000-0000-000000000000'::uuid),
            coalesce(api_key_id, '00000000-0000-0000-0000-000000000000'::uuid),
            period);
        CREATE INDEX budgets_team ON budgets (team_id) WHERE limit_micros IS NOT NULL;

        -- A budget's money in one calendar window ('-infinity' starts the 'total' window).
        CREATE TABLE budget_periods (
            budget_id bigint NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
            starts_at timestamptz NOT NULL,
            ends_at timestamptz,
            spent_micros bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
            reserved_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
            alerted_percent smallint NOT NULL DEFAULT 0,
            PRIMARY KEY (budget_id, starts_at)
        );

        -- Append-only: every reserve, settle and release, per budget period and task.
        CREATE TABLE budget_ledger (
            id bigserial PRIMARY KEY,
            budget_id bigint NOT NULL,
            starts_at timestamptz NOT NULL,
            task_id text NOT NULL REFERENCES tasks (id),
            model text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('reserve', 'settle', 'release')),
            amount_micros bigint NOT NULL CHECK (amount_micros > 0),
            created_at timestamptz NOT NULL DEFAULT now(),
            FOREIGN KEY (budget_id, starts_at)
                REFERENCES budget_periods (budget_id, starts_at) ON DELETE CASCADE
        );
        CREATE INDEX budget_ledger_task ON budget_ledger (task_id);
        CREATE INDEX budget_ledger_period ON budget_ledger (budget_id, starts_at);

        CREATE FUNCTION qgw_period_start(period text, at timestamptz, tz text)
        RETURNS timestamptz LANGUAGE sql STABLE AS $$
            SELECT CASE WHEN period = 'total' THEN '-infinity'::timestamptz
                        ELSE date_trunc(period, at, tz) END
        $$;

        CREATE FUNCTION qgw_period_end(period text, starts timestamptz, tz text)
        RETURNS timestamptz LANGUAGE sql STABLE AS $$
            SELECT CASE WHEN period = 'total' THEN NULL
                        ELSE ((starts AT TIME ZONE tz) + ('1 ' || period)::interval)
                             AT TIME ZONE tz END
        $$;

        -- The live budget windows covering a task of (team, key) at `at`, by budget id.
        CREATE FUNCTION qgw_covering(p_team uuid, p_key uuid, p_at timestamptz, p_tz text)
        RETURNS TABLE (budget_id bigint, scope text, period text, limit_micros bigint,
                       starts_at timestamptz)
        LANGUAGE sql STABLE AS $$
            SELECT b.id, b.scope, b.period, b.limit_micros,
                   qgw_period_start(b.period, p_at, p_tz)
            FROM budgets b
            WHERE b.limit_micros IS NOT NULL
              AND (b.scope = 'company' OR (b.scope = 'team' AND b.team_id = p_team)
                   OR (b.scope = 'key' AND b.api_key_id = p_key))
            ORDER BY b.id
        $$;

        -- Admit a batch of tasks in one transaction (one commit for all of them). Each task:
        -- its team's concurrency cap, a reservation in every budget window that covers it,
        -- the task row, its ledger entries, its threshold crossings. A refused task (QB429
        -- concurrency, QB402 budget with DETAIL naming it as JSON) is rolled back alone and
        -- answered as a row with `refusal` set; the others stand.
        -- Locks, for the whole batch and in this order only: the rows of capped teams by id,
        -- then every budget window the batch touches by (budget, start). Every admission
        -- takes them so, hence no deadlock; and they are held for the statement and its
        -- commit, never across a round trip.
        CREATE FUNCTION qgw_admit_tasks(
            p_ids text[], p_teams uuid[], p_keys uuid[], p_models text[], p_actions text[],
            p_requests jsonb[], p_costs bigint[], p_priorities smallint[],
            p_callback_urls text[], p_callback_events jsonb[], p_now timestamptz, p_tz text,
            p_thresholds int[])
        RETURNS TABLE (idx int, task tasks, crossings jsonb, refusal text, detail text)
        LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        DECLARE
            i int;
            b record;
            p budget_periods;
            level int;
            pct int;
            cap int;
            crossing jsonb;
            reserved_in bigint[];
            reserved_from timestamptz[];
        BEGIN
            PERFORM 1 FROM teams
             WHERE id = ANY(p_teams) AND max_concurrent_tasks IS NOT NULL
             ORDER BY id FOR NO KEY UPDATE;
            INSERT INTO budget_periods (budget_id, starts_at, ends_at)
            SELECT DISTINCT c.budget_id, c.starts_at,
                   qgw_period_end(c.period, c.starts_at, p_tz)
              FROM unnest(p_teams, p_keys) AS t(team, key),
                   LATERAL qgw_covering(t.team, t.key, p_now, p_tz) c
             ORDER BY 1, 2
            ON CONFLICT DO NOTHING;
            PERFORM 1 FROM budget_periods bp
             WHERE (bp.budget_id, bp.starts_at) IN (
                   SELECT c.budget_id, c.starts_at
                     FROM unnest(p_teams, p_keys) AS t(team, key),
                          LATERAL qgw_covering(t.team, t.key, p_now, p_tz) c)
             ORDER BY bp.budget_id, bp.starts_at FOR NO KEY UPDATE;

            FOR i IN 1 .. cardinality(p_ids) LOOP
                idx := i;
                BEGIN
                    SELECT max_concurrent_tasks INTO cap FROM teams WHERE id = p_teams[i];
                    -- Under the team's row lock the count sees every admission committed
                    -- before ours and those earlier in this batch; finishing only lowers it.
                    IF cap IS NOT NULL AND (SELECT count(*) FROM tasks
                        WHERE team_id = p_teams[i] AND dispatch_state <> 'done') >= cap THEN
                        RAISE EXCEPTION 'concurrency limit reached' USING ERRCODE = 'QB429';
                    END IF;
                    INSERT INTO tasks (id, team_id, api_key_id, model, action, request,
                                       cost_micros, priority, callback_url, callback_events)
                    VALUES (p_ids[i], p_teams[i], p_keys[i], p_models[i], p_actions[i],
                            p_requests[i], p_costs[i], p_priorities[i], p_callback_urls[i],
                            ARRAY(SELECT jsonb_array_elements_text(p_callback_events[i])))
                    RETURNING * INTO task;
                    crossings := '[]'::jsonb;
                    reserved_in := '{}';
                    reserved_from := '{}';

                    FOR b IN SELECT * FROM qgw_covering(p_teams[i], p_keys[i], p_now, p_tz)
                    LOOP
                        UPDATE budget_periods SET reserved_micros = reserved_micros + p_costs[i]
                         WHERE budget_id = b.budget_id AND starts_at = b.starts_at
                           AND spent_micros + reserved_micros + p_costs[i] <= b.limit_micros
                        RETURNING * INTO p;
                        IF NOT FOUND THEN
                            SELECT * INTO p FROM budget_periods
                             WHERE budget_id = b.budget_id AND starts_at = b.starts_at;
                            RAISE EXCEPTION 'budget exceeded' USING ERRCODE = 'QB402',
                                DETAIL = jsonb_build_object(
                                    'budget_id', b.budget_id, 'scope', b.scope,
                                    'window', b.period, 'limit_micros', b.limit_micros,
                                    'spent_micros', p.spent_micros,
                                    'reserved_micros', p.reserved_micros,
                                    'cost_micros', p_costs[i], 'resets_at', p.ends_at)::text;
                        END IF;
                        reserved_in := reserved_in || b.budget_id;
                        reserved_from := reserved_from || b.starts_at;

                        level := NULL;
                        IF b.limit_micros > 0 THEN
                            FOREACH pct IN ARRAY p_thresholds LOOP  -- ascending
                                IF (p.spent_micros + p.reserved_micros) * 100
                                   >= pct::bigint * b.limit_micros THEN
                                    level := pct;
                                END IF;
                            END LOOP;
                        END IF;
                        IF level IS NOT NULL AND level > p.alerted_percent THEN
                            UPDATE budget_periods SET alerted_percent = level
                             WHERE budget_id = b.budget_id AND starts_at = b.starts_at;
                            crossing := jsonb_build_object(
                                'budget_id', b.budget_id, 'scope', b.scope,
                                'window', b.period, 'percent', level,
                                'limit_micros', b.limit_micros,
                                'spent_micros', p.spent_micros,
                                'reserved_micros', p.reserved_micros,
                                'resets_at', p.ends_at);
                            crossings := crossings || crossing;
                            -- The team's signed alert webhook, in the outbox of 0004.
                            INSERT INTO webhook_events (id, team_id, event, url, payload)
                            SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), t.id,
                                   'budget.threshold', t.alert_url,
                                   jsonb_build_object(
                                       'event', 'budget.threshold', 'team_id', t.id,
                                       'team', t.name, 'scope', b.scope, 'window', b.period,
                                       'percent', level,
                                       'limit_usd',
                                       trim_scale(b.limit_micros / 1000000.0)::text,
                                       'spent_usd',
                                       trim_scale(p.spent_micros / 1000000.0)::text,
                                       'reserved_usd',
                                       trim_scale(p.reserved_micros / 1000000.0)::text,
                                       'resets_at', p.ends_at, 'task_id', p_ids[i])
                              FROM teams t WHERE t.id = p_teams[i] AND t.alert_url IS NOT NULL;
                        END IF;
                    END LOOP;
                    IF cardinality(reserved_in) > 0 THEN
                        INSERT INTO budget_ledger (budget_id, starts_at, task_id, model, kind,
                                                   amount_micros)
                        SELECT r.id, r.starts_at, p_ids[i], p_models[i], 'reserve', p_costs[i]
                          FROM unnest(reserved_in, reserved_from) AS r(id, starts_at);
                    END IF;
                    refusal := NULL;
                    detail := NULL;
                EXCEPTION WHEN SQLSTATE 'QB402' OR SQLSTATE 'QB429' THEN
                    GET STACKED DIAGNOSTICS refusal = RETURNED_SQLSTATE,
                                            detail = PG_EXCEPTION_DETAIL;
                    task := NULL;
                    crossings := NULL;
                END;
                RETURN NEXT;
            END LOOP;
        END
        $$;

        -- Settle a task that just became terminal (same transaction): completed turns each
        -- reservation into spend in the window it was reserved in; anything else releases
        -- it. Call once per task (finish() guarantees it).
        CREATE FUNCTION qgw_settle_task(p_task text, p_completed boolean)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            r record;
        BEGIN
            FOR r IN
                SELECT budget_id, starts_at, model, amount_micros FROM budget_ledger
                 WHERE task_id = p_task AND kind = 'reserve'
                 ORDER BY budget_id
            LOOP
                UPDATE budget_periods
                   SET reserved_micros = reserved_micros - r.amount_micros,
                       spent_micros = spent_micros
                                      + CASE WHEN p_completed THEN r.amount_micros ELSE 0 END
                 WHERE budget_id = r.budget_id AND starts_at = r.starts_at;
                INSERT INTO budget_ledger (budget_id, starts_at, task_id, model, kind,
                                           amount_micros)
                VALUES (r.budget_id, r.starts_at, p_task, r.model,
                        CASE WHEN p_completed THEN 'settle' ELSE 'release' END,
                        r.amount_micros);
            END LOOP;
        END
        $$;
        """
    )


def downgrade() -> None:
    run_script(
        """
        DROP FUNCTION qgw_settle_task, qgw_admit_tasks, qgw_covering, qgw_period_end,
                      qgw_period_start;
        DROP TABLE budget_ledger, budget_periods, budgets;
        ALTER TABLE api_keys DROP COLUMN rpm_limit;
        ALTER TABLE upstream_state DROP COLUMN submit_tokens, DROP COLUMN tokens_at;
        DROP INDEX tasks_team_unfinished;
        ALTER TABLE teams DROP COLUMN alert_url;
        """
    )

"""Budgets, their per-window periods, the append-only ledger, and admission in one statement.

Revision ID: 0003_budgets
Revises: 0002_task_notify
Create Date: 2026-11-24

Admission (`qgw_admit_task`) and settlement (`qgw_settle_task`) are SQL functions so that
each runs as one statement: the row locks they take on the team and on every budget period
are held for microseconds of server time, never across a network round trip, and they are
always taken in the same order (the team row when it has a concurrency cap, then budget
windows by budget id), so concurrent submissions and settlements cannot deadlock.
"""

from service.platform.db import run_script

revision = "0003_budgets"
down_revision = "0002_task_notify"
branch_labels = None
depends_on = None


# The money-moving functions as this revision made them (0005 puts them back on downgrade).
ADMIT_TASK = """
        -- Admit one task: concurrency slot, a reservation in every budget that covers it,
        -- the ledger, the task row. Raises QB429 (concurrency) or QB402 (budget, DETAIL is
        -- JSON naming it); either rolls back everything. Returns the task and the budget
        -- thresholds this reservation crossed.
        CREATE FUNCTION qgw_admit_task(
            p_id text, p_team uuid, p_key uuid, p_model text, p_action text,
            p_request jsonb, p_cost bigint, p_priority smallint, p_callback_url text,
            p_callback_events text[], p_now timestamptz, p_tz text, p_thresholds int[],
            OUT task tasks, OUT crossings jsonb)
        LANGUAGE plpgsql AS $$
        DECLARE
            b record;
            p budget_periods;
            starts timestamptz;
            level int;
            pct int;
            cap int;
            crossing jsonb;
            reserved_in bigint[] := '{}';
            reserved_from timestamptz[] := '{}';
        BEGIN
            crossings := '[]'::jsonb;
            -- Only a team with a cap serialises its admissions (on its row): the count
            -- then sees every admission committed before ours, and finishing tasks can
            -- only lower it, so the cap is exact.
            SELECT max_concurrent_tasks INTO cap FROM teams WHERE id = p_team;
            IF cap IS NOT NULL THEN
                PERFORM 1 FROM teams WHERE id = p_team FOR NO KEY UPDATE;
                IF (SELECT count(*) FROM tasks
                     WHERE team_id = p_team AND dispatch_state <> 'done') >= cap THEN
                    RAISE EXCEPTION 'concurrency limit reached' USING ERRCODE = 'QB429';
                END IF;
            END IF;
            INSERT INTO tasks (id, team_id, api_key_id, model, action, request, cost_micros,
                               priority, callback_url, callback_events)
            VALUES (p_id, p_team, p_key, p_model, p_action, p_request, p_cost, p_priority,
                    p_callback_url, p_callback_events)
            RETURNING * INTO task;

            FOR b IN
                SELECT id, scope, period, limit_micros FROM budgets
                 WHERE limit_micros IS NOT NULL
                   AND (scope = 'company'
                        OR (scope = 'team' AND team_id = p_team)
                        OR (scope = 'key' AND api_key_id = p_key))
                 ORDER BY id
            LOOP
                starts := qgw_period_start(b.period, p_now, p_tz);
                UPDATE budget_periods SET reserved_micros = reserved_micros + p_cost
                 WHERE budget_id = b.id AND starts_at = starts
                   AND spent_micros + reserved_micros + p_cost <= b.limit_micros
                RETURNING * INTO p;
                IF NOT FOUND THEN
                    -- The window's first task creates its row; or the budget is full.
                    INSERT INTO budget_periods (budget_id, starts_at, ends_at)
                    VALUES (b.id, starts, qgw_period_end(b.period, starts, p_tz))
                    ON CONFLICT DO NOTHING;
                    UPDATE budget_periods SET reserved_micros = reserved_micros + p_cost
                     WHERE budget_id = b.id AND starts_at = starts
                       AND spent_micros + reserved_micros + p_cost <= b.limit_micros
                    RETURNING * INTO p;
                END IF;
                IF NOT FOUND THEN
                    SELECT * INTO p FROM budget_periods
                     WHERE budget_id = b.id AND starts_at = starts;
                    RAISE EXCEPTION 'budget exceeded' USING ERRCODE = 'QB402',
                        DETAIL = jsonb_build_object(
                            'budget_id', b.id, 'scope', b.scope, 'window', b.period,
                            'limit_micros', b.limit_micros, 'spent_micros', p.spent_micros,
                            'reserved_micros', p.reserved_micros, 'cost_micros', p_cost,
                            'resets_at', p.ends_at)::text;
                END IF;
                reserved_in := reserved_in || b.id;
                reserved_from := reserved_from || starts;

                level := NULL;
                IF b.limit_micros > 0 THEN
                    FOREACH pct IN ARRAY p_thresholds LOOP
                        IF (p.spent_micros + p.reserved_micros) * 100
                           >= pct::bigint * b.limit_micros THEN
                            level := pct;
                        END IF;
                    END LOOP;
                END IF;
                IF level IS NOT NULL AND level > p.alerted_percent THEN
                    UPDATE budget_periods SET alerted_percent = level
                     WHERE budget_id = b.id AND starts_at = starts;
                    crossing := jsonb_build_object(
                        'budget_id', b.id, 'scope', b.scope, 'window', b.period,
                        'percent', level, 'limit_micros', b.limit_micros,
                        'spent_micros', p.spent_micros, 'reserved_micros', p.reserved_micros,
                        'resets_at', p.ends_at);
                    crossings := crossings || crossing;
                    -- The team's signed alert webhook, in the outbox of migration 0004.
                    INSERT INTO webhook_events (id, team_id, event, url, payload)
                    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), p_team,
                           'budget.threshold', alert_url,
                           jsonb_build_object(
                               'event', 'budget.threshold', 'team_id', p_team,
                               'team', name, 'scope', b.scope, 'window', b.period,
                               'percent', level,
                               'limit_usd', trim_scale(b.limit_micros / 1000000.0)::text,
                               'spent_usd', trim_scale(p.spent_micros / 1000000.0)::text,
                               'reserved_usd', trim_scale(p.reserved_micros / 1000000.0)::text,
                               'resets_at', p.ends_at, 'task_id', p_id)
                      FROM teams WHERE id = p_team AND alert_url IS NOT NULL;
                END IF;
            END LOOP;
            IF cardinality(reserved_in) > 0 THEN  -- the ledger, in one statement
                INSERT INTO budget_ledger (budget_id, starts_at, task_id, model, kind,
                                           amount_micros)
                SELECT r.id, r.starts_at, p_id, p_model, 'reserve', p_cost
                  FROM unnest(reserved_in, reserved_from) AS r(id, starts_at);
            END IF;
        END
        $$;

"""

SETTLE_TASK = """
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

        """
        + ADMIT_TASK
        + SETTLE_TASK
    )


def downgrade() -> None:
    run_script(
        """
        DROP FUNCTION qgw_settle_task, qgw_admit_task, qgw_period_end, qgw_period_start;
        DROP TABLE budget_ledger, budget_periods, budgets;
        ALTER TABLE api_keys DROP COLUMN rpm_limit;
        ALTER TABLE upstream_state DROP COLUMN submit_tokens, DROP COLUMN tokens_at;
        DROP INDEX tasks_team_unfinished;
        ALTER TABLE teams DROP COLUMN alert_url;
        """
    )

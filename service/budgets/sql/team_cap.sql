-- qgw_check_team_cap: a team with a max_concurrent_tasks admits one task at a time, on its
-- row, and is refused when that many of its tasks are unfinished:
--   QB429  DETAIL: {"max_concurrent_tasks": N}.
-- The row lock is held to the end of the caller's transaction, so the count sees every
-- admission committed before this one, and finishing tasks can only lower it. A team
-- without a cap takes no lock. Callers lock the team before any budget shard.
CREATE OR REPLACE FUNCTION qgw_check_team_cap(p_team uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    cap int;
BEGIN
    SELECT max_concurrent_tasks INTO cap FROM teams WHERE id = p_team;
    IF cap IS NULL THEN
        RETURN;
    END IF;
    -- Read again under the lock: a cap changed meanwhile applies to this admission.
    SELECT max_concurrent_tasks INTO cap FROM teams WHERE id = p_team FOR NO KEY UPDATE;
    IF cap IS NOT NULL AND (SELECT count(*) FROM tasks
                             WHERE team_id = p_team AND dispatch_state <> 'done') >= cap THEN
        RAISE EXCEPTION 'concurrency limit reached' USING ERRCODE = 'QB429',
            DETAIL = jsonb_build_object('max_concurrent_tasks', cap)::text;
    END IF;
END
$$;

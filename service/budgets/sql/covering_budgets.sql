-- qgw_covering_budgets: the live budgets a task of this team, submitted with this key,
-- reserves against: the company's, its team's and its key's. The one definition of
-- coverage: admission (both paths) and estimates read it from here.
--
-- Plain SQL, STABLE, not STRICT, one SELECT: the planner inlines it into the calling
-- query (EXPLAIN shows a scan of budgets, not a function call), so it costs admission
-- nothing over writing the condition out.
CREATE OR REPLACE FUNCTION qgw_covering_budgets(p_team uuid, p_key uuid)
RETURNS SETOF budgets LANGUAGE sql STABLE AS $$
    SELECT * FROM budgets
     WHERE limit_micros IS NOT NULL
       AND (scope = 'company'
            OR (scope = 'team' AND team_id = p_team)
            OR (scope = 'key' AND api_key_id = p_key))
$$;

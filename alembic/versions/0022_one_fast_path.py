"""One fast path for money (issue 33 point 1).

Revision ID: 0022_one_fast_path
Revises: 0021_catalog_documents
Create Date: 2026-12-07

The batch statement, `qgw_reserve_and_insert_tasks`, becomes the only fast path: a lone
task is a batch of one, and a capped team's lone task passes its cap check there
(`qgw_check_team_cap`, team_cap.sql). `qgw_reserve_and_insert_task` keeps only the
exclusive path and loses its `p_exclusive` argument (13 arguments now). Which budgets
cover a task is defined once, `qgw_covering_budgets` (covering_budgets.sql), read by both
admission functions and by estimates.

API pods of the previous release call the 14-argument `qgw_reserve_and_insert_task`
during a rollout: it stays, as a shim onto the two functions above (its fast call is a
batch of one), so every database at head has one fast path whatever calls it. A later
migration drops it. Downgrading keeps the functions: the previous release's calls (the
shim's, and the batch's unchanged signature) run on them.
"""

from service.platform.db import install_sql_file, run_script

revision = "0022_one_fast_path"
down_revision = "0021_catalog_documents"
branch_labels = None
depends_on = None

# In this order: the two admission functions call the first two.
FILES = {
    "budgets/sql/covering_budgets.sql": (
        "faaa76160311ed90e2891423feeb903de1fe1ef49bb9e3b051297a841741dff9"
    ),
    "budgets/sql/team_cap.sql": "99ede7608f2901572ac61a5ef0c4e90d323d4944c77c1acbac3989f239327d0d",
    "budgets/sql/reserve_and_insert_task.sql": (
        "22c756bbd1d70a98e0a5a954c382163ffcd9f98a27a2bdce1858c4fd0aa96738"
    ),
    "budgets/sql/reserve_and_insert_tasks.sql": (
        "9ec78f1af6484aa555b4d99c6c765722277ecdad28fe57fa196b129376b311dd"
    ),
}

# The previous release's call, onto this release's paths (see the docstring).
PREVIOUS_RELEASE_ADMISSION = """
CREATE OR REPLACE FUNCTION qgw_reserve_and_insert_task(
    p_id text, p_team uuid, p_key uuid, p_model text, p_action text,
    p_request jsonb, p_cost bigint, p_priority smallint, p_callback_url text,
    p_callback_events text[], p_now timestamptz, p_tz text, p_thresholds int[],
    p_exclusive boolean, OUT task tasks, OUT crossings jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    admitted record;
BEGIN
    IF p_exclusive THEN
        SELECT * INTO admitted
          FROM qgw_reserve_and_insert_task(p_id, p_team, p_key, p_model, p_action,
               p_request, p_cost, p_priority, p_callback_url, p_callback_events, p_now,
               p_tz, p_thresholds);
        task := admitted.task;
        crossings := admitted.crossings;
    ELSE
        SELECT * INTO task
          FROM qgw_reserve_and_insert_tasks(ARRAY[p_id], ARRAY[p_team], ARRAY[p_key],
               ARRAY[p_model], ARRAY[p_action], ARRAY[p_request], ARRAY[p_cost],
               ARRAY[p_priority], ARRAY[p_callback_url],
               ARRAY[array_to_string(p_callback_events, ',')], ARRAY[p_now], p_tz);
        crossings := '[]'::jsonb;
    END IF;
END
$$;
"""


def upgrade() -> None:
    for name, digest in FILES.items():
        install_sql_file(name, sha256=digest)
    run_script(PREVIOUS_RELEASE_ADMISSION)


def downgrade() -> None:
    # The functions stay (see the docstring): 0015 and 0011 drop the batch and the
    # 14-argument call on their way down, as before.
    pass

-- qgw_settle_task: a terminal task's reservations become spend at what Qingbo charged
-- (p_charged; NULL: at the reserved amount), or are released. Called once per task, in the
-- transaction that makes it terminal (tasks/settlement.py finish()).
-- Ledger: settle or release of the reserved amount, then overcharge or undercharge for the
-- difference (positive amounts; append-only). An overcharge adds spend no shard allowance
-- was shared out for, so the window's allowances are taken back (every shard locked in
-- shard order, the order admissions use) and the next admission there shares out again.
CREATE OR REPLACE FUNCTION qgw_settle_task(p_task text, p_completed boolean, p_charged bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
    drift bigint;
BEGIN
    FOR r IN
        SELECT budget_id, starts_at, shard, model, amount_micros FROM budget_ledger
         WHERE task_id = p_task AND kind = 'reserve'
         ORDER BY budget_id, shard
    LOOP
        drift := CASE WHEN p_completed AND p_charged IS NOT NULL
                      THEN p_charged - r.amount_micros ELSE 0 END;
        IF drift > 0 THEN
            PERFORM 1 FROM budget_shards
              WHERE budget_id = r.budget_id AND starts_at = r.starts_at
              ORDER BY shard FOR UPDATE;
            UPDATE budget_shards SET limit_micros = NULL
             WHERE budget_id = r.budget_id AND starts_at = r.starts_at;
        END IF;
        UPDATE budget_shards
           SET reserved_micros = reserved_micros - r.amount_micros,
               spent_micros = spent_micros
                              + CASE WHEN p_completed THEN r.amount_micros + drift ELSE 0 END
         WHERE budget_id = r.budget_id AND starts_at = r.starts_at AND shard = r.shard;
        INSERT INTO budget_ledger (budget_id, starts_at, shard, task_id, model, kind,
                                   amount_micros)
        VALUES (r.budget_id, r.starts_at, r.shard, p_task, r.model,
                CASE WHEN p_completed THEN 'settle' ELSE 'release' END, r.amount_micros);
        IF drift <> 0 THEN
            INSERT INTO budget_ledger (budget_id, starts_at, shard, task_id, model, kind,
                                       amount_micros)
            VALUES (r.budget_id, r.starts_at, r.shard, p_task, r.model,
                    CASE WHEN drift > 0 THEN 'overcharge' ELSE 'undercharge' END, abs(drift));
        END IF;
    END LOOP;
END
$$;

-- qgw_dispute_task: Qingbo reported p_excess more than the budgets were charged (the charge
-- is capped at the reservation times QGW_CHARGE_CAP_FACTOR; budgets/disputes.py). The
-- ledger records it beside each of the task's budgets as 'disputed': neither spent nor
-- reserved, so every window balances and the team can still spend.
CREATE OR REPLACE FUNCTION qgw_dispute_task(p_task text, p_excess bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO budget_ledger (budget_id, starts_at, shard, task_id, model, kind, amount_micros)
    SELECT budget_id, starts_at, shard, task_id, model, 'disputed', p_excess
      FROM budget_ledger
     WHERE task_id = p_task AND kind = 'reserve'
     ORDER BY budget_id, shard;
END
$$;

-- qgw_charge_dispute: an admin accepted the dispute: its excess becomes spend in each of
-- the task's budgets, an overcharge as in qgw_settle_task (allowances taken back first,
-- every shard locked in shard order, the order admissions use).
CREATE OR REPLACE FUNCTION qgw_charge_dispute(p_task text, p_excess bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT budget_id, starts_at, shard, model FROM budget_ledger
         WHERE task_id = p_task AND kind = 'reserve'
         ORDER BY budget_id, shard
    LOOP
        PERFORM 1 FROM budget_shards
          WHERE budget_id = r.budget_id AND starts_at = r.starts_at
          ORDER BY shard FOR UPDATE;
        UPDATE budget_shards SET limit_micros = NULL
         WHERE budget_id = r.budget_id AND starts_at = r.starts_at;
        UPDATE budget_shards SET spent_micros = spent_micros + p_excess
         WHERE budget_id = r.budget_id AND starts_at = r.starts_at AND shard = r.shard;
        INSERT INTO budget_ledger (budget_id, starts_at, shard, task_id, model, kind,
                                   amount_micros)
        VALUES (r.budget_id, r.starts_at, r.shard, p_task, r.model, 'overcharge', p_excess);
    END LOOP;
END
$$;

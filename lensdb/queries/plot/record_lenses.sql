-- what:   the lenses that have records in a run.
-- params: $run
SELECT DISTINCT lens FROM v1.records WHERE run_id = $run

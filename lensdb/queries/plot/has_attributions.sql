-- what:   one row if the run has attributions (extract --attribution), else none.
-- params: $run
SELECT 1 FROM v1.attributions WHERE run_id = $run LIMIT 1

-- what:   the token groups a run tracks (extract --track), by name.
-- params: $run
SELECT DISTINCT group_name FROM v1.group_tokens WHERE run_id = $run ORDER BY 1

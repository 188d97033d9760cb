-- what:   a run's final predictions (every v1.final_predictions column), by prompt and temperature.
-- params: $run
SELECT * FROM v1.final_predictions WHERE run_id = $run ORDER BY prompt_index, temperature

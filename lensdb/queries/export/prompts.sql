-- what:   a run's prompts (every v1.prompts column), in the prompt set's order.
-- params: $run
SELECT * FROM v1.prompts WHERE run_id = $run ORDER BY prompt_index

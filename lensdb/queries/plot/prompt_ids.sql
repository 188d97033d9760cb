-- what:   the prompt ids of a run, in the prompt set's order (for error messages).
-- params: $run
SELECT prompt_id, min(prompt_index) AS i FROM v1.prompts WHERE run_id = $run GROUP BY prompt_id ORDER BY i
